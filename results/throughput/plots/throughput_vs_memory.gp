# Decode throughput versus GPU memory budget (internvl2.5-8b)
# Data: throughput_vs_memory.dat. Re-render with `calibq plot <run folder>` or `gnuplot throughput_vs_memory.gp` in this folder.
set termoption noenhanced
set title "Decode throughput versus GPU memory budget (internvl2.5-8b)"
set xlabel "GPU memory budget (GiB)"
set ylabel "decode tokens/s"
set grid
set key left top
set terminal pngcairo noenhanced size 900,500 font ",10"
set output "throughput_vs_memory.png"
plot 'throughput_vs_memory.dat' index 0 using 1:2 with linespoints lw 2 pt 7 title "calibquant:bits=1", 'throughput_vs_memory.dat' index 1 using 1:2 with linespoints lw 2 pt 7 title "none"
set terminal svg noenhanced size 900,500 dynamic
set output "throughput_vs_memory.svg"
plot 'throughput_vs_memory.dat' index 0 using 1:2 with linespoints lw 2 pt 7 title "calibquant:bits=1", 'throughput_vs_memory.dat' index 1 using 1:2 with linespoints lw 2 pt 7 title "none"
