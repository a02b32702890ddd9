# Decode throughput versus batch (internvl2.5-8b)
# Data: throughput_vs_batch.dat. Re-render with `calibq plot <run folder>` or `gnuplot throughput_vs_batch.gp` in this folder.
set termoption noenhanced
set title "Decode throughput versus batch (internvl2.5-8b)"
set xlabel "batch (sequences)"
set ylabel "decode tokens/s"
set logscale x 2
set grid
set key left top
set terminal pngcairo noenhanced size 900,500 font ",10"
set output "throughput_vs_batch.png"
plot 'throughput_vs_batch.dat' index 0 using 1:2 with linespoints lw 2 pt 7 title "calibquant:bits=1", 'throughput_vs_batch.dat' index 1 using 1:2 with linespoints lw 2 pt 7 title "none", 'throughput_vs_batch.dat' index 2 using 1:2 with linespoints lw 2 pt 7 title "transformers (16-bit)"
set terminal svg noenhanced size 900,500 dynamic
set output "throughput_vs_batch.svg"
plot 'throughput_vs_batch.dat' index 0 using 1:2 with linespoints lw 2 pt 7 title "calibquant:bits=1", 'throughput_vs_batch.dat' index 1 using 1:2 with linespoints lw 2 pt 7 title "none", 'throughput_vs_batch.dat' index 2 using 1:2 with linespoints lw 2 pt 7 title "transformers (16-bit)"
