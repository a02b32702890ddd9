# accuracy of every cell
# Data: metric_vs_bits.dat. Re-render with `calibq plot <run folder>` or `gnuplot metric_vs_bits.gp` in this folder.
set termoption noenhanced
set ylabel "accuracy"
set grid
set key outside right
set xlabel "bits"
set logscale x 2
set xrange [0.8:5.2]
set terminal pngcairo noenhanced size 900,500 font ",10"
set output "metric_vs_bits.png"
plot 'metric_vs_bits.dat' index 0 using 1:2 with lines dt 2 lw 2 title "bf16 (no bits)", 'metric_vs_bits.dat' index 1 using 1:2 with linespoints lw 2 pt 7 title "calibquant", 'metric_vs_bits.dat' index 2 using 1:2 with lines dt 2 lw 2 title "fp16 (no bits)", 'metric_vs_bits.dat' index 3 using 1:2 with lines dt 2 lw 2 title "fp32 (no bits)", 'metric_vs_bits.dat' index 4 using 1:2 with linespoints lw 2 pt 7 title "group", 'metric_vs_bits.dat' index 5 using 1:2 with linespoints lw 2 pt 7 title "kivi", 'metric_vs_bits.dat' index 6 using 1:2 with lines dt 2 lw 2 title "none (no bits)", 'metric_vs_bits.dat' index 7 using 1:2 with linespoints lw 2 pt 7 title "post_scaled", 'metric_vs_bits.dat' index 8 using 1:2 with linespoints lw 2 pt 7 title "quantile", 'metric_vs_bits.dat' index 9 using 1:2 with lines dt 2 lw 2 title "token_drop (no bits)", 'metric_vs_bits.dat' index 10 using 1:2 with linespoints lw 2 pt 7 title "uniform"
set terminal svg noenhanced size 900,500 dynamic
set output "metric_vs_bits.svg"
plot 'metric_vs_bits.dat' index 0 using 1:2 with lines dt 2 lw 2 title "bf16 (no bits)", 'metric_vs_bits.dat' index 1 using 1:2 with linespoints lw 2 pt 7 title "calibquant", 'metric_vs_bits.dat' index 2 using 1:2 with lines dt 2 lw 2 title "fp16 (no bits)", 'metric_vs_bits.dat' index 3 using 1:2 with lines dt 2 lw 2 title "fp32 (no bits)", 'metric_vs_bits.dat' index 4 using 1:2 with linespoints lw 2 pt 7 title "group", 'metric_vs_bits.dat' index 5 using 1:2 with linespoints lw 2 pt 7 title "kivi", 'metric_vs_bits.dat' index 6 using 1:2 with lines dt 2 lw 2 title "none (no bits)", 'metric_vs_bits.dat' index 7 using 1:2 with linespoints lw 2 pt 7 title "post_scaled", 'metric_vs_bits.dat' index 8 using 1:2 with linespoints lw 2 pt 7 title "quantile", 'metric_vs_bits.dat' index 9 using 1:2 with lines dt 2 lw 2 title "token_drop (no bits)", 'metric_vs_bits.dat' index 10 using 1:2 with linespoints lw 2 pt 7 title "uniform"
