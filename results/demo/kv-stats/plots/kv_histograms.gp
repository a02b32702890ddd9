# Histograms of all visual tokens key and value entries per layer (log counts)
# Data: kv_histograms.dat. Re-render with `calibq plot <run folder>` or `gnuplot kv_histograms.gp` in this folder.
set termoption noenhanced
set xlabel "value"
set ylabel "count"
set logscale y
set grid
set key top right
set terminal pngcairo noenhanced size 1100,500 font ",10"
set output "kv_histograms.png"
set multiplot layout 1,2 title "K and V entries: visual tokens"
set title "keys"
plot 'kv_histograms.dat' index 0 using 1:($2 > 0 ? $2 : 1/0) with steps lw 1.5 title "layer 0", 'kv_histograms.dat' index 1 using 1:($2 > 0 ? $2 : 1/0) with steps lw 1.5 title "layer 2", 'kv_histograms.dat' index 2 using 1:($2 > 0 ? $2 : 1/0) with steps lw 1.5 title "layer 3"
set title "values"
plot 'kv_histograms.dat' index 3 using 1:($2 > 0 ? $2 : 1/0) with steps lw 1.5 title "layer 0", 'kv_histograms.dat' index 4 using 1:($2 > 0 ? $2 : 1/0) with steps lw 1.5 title "layer 2", 'kv_histograms.dat' index 5 using 1:($2 > 0 ? $2 : 1/0) with steps lw 1.5 title "layer 3"
unset multiplot
set terminal svg noenhanced size 1100,500 dynamic
set output "kv_histograms.svg"
set multiplot layout 1,2 title "K and V entries: visual tokens"
set title "keys"
plot 'kv_histograms.dat' index 0 using 1:($2 > 0 ? $2 : 1/0) with steps lw 1.5 title "layer 0", 'kv_histograms.dat' index 1 using 1:($2 > 0 ? $2 : 1/0) with steps lw 1.5 title "layer 2", 'kv_histograms.dat' index 2 using 1:($2 > 0 ? $2 : 1/0) with steps lw 1.5 title "layer 3"
set title "values"
plot 'kv_histograms.dat' index 3 using 1:($2 > 0 ? $2 : 1/0) with steps lw 1.5 title "layer 0", 'kv_histograms.dat' index 4 using 1:($2 > 0 ? $2 : 1/0) with steps lw 1.5 title "layer 2", 'kv_histograms.dat' index 5 using 1:($2 > 0 ? $2 : 1/0) with steps lw 1.5 title "layer 3"
unset multiplot
