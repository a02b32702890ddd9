# Per-channel range (min to max over tokens) of visual tokens keys and values, per layer
# Data: kv_channel_ranges.dat. Re-render with `calibq plot <run folder>` or `gnuplot kv_channel_ranges.gp` in this folder.
set termoption noenhanced
set xlabel "channel (head * head_dim + d)"
set ylabel "value"
set grid
set terminal pngcairo noenhanced size 1140,700 font ",10"
set output "kv_channel_ranges.png"
set multiplot layout 2,3 title "Per-channel ranges: visual tokens"
set title "layer 0 keys"
plot 'kv_channel_ranges.dat' index 0 using 1:2:3 with filledcurves lc rgb "#4477aa" notitle, '' index 0 using 1:2 with lines lc rgb "#333333" lw 0.5 notitle, '' index 0 using 1:3 with lines lc rgb "#333333" lw 0.5 notitle
set title "layer 2 keys"
plot 'kv_channel_ranges.dat' index 1 using 1:2:3 with filledcurves lc rgb "#4477aa" notitle, '' index 1 using 1:2 with lines lc rgb "#333333" lw 0.5 notitle, '' index 1 using 1:3 with lines lc rgb "#333333" lw 0.5 notitle
set title "layer 3 keys"
plot 'kv_channel_ranges.dat' index 2 using 1:2:3 with filledcurves lc rgb "#4477aa" notitle, '' index 2 using 1:2 with lines lc rgb "#333333" lw 0.5 notitle, '' index 2 using 1:3 with lines lc rgb "#333333" lw 0.5 notitle
set title "layer 0 values"
plot 'kv_channel_ranges.dat' index 3 using 1:2:3 with filledcurves lc rgb "#cc6677" notitle, '' index 3 using 1:2 with lines lc rgb "#333333" lw 0.5 notitle, '' index 3 using 1:3 with lines lc rgb "#333333" lw 0.5 notitle
set title "layer 2 values"
plot 'kv_channel_ranges.dat' index 4 using 1:2:3 with filledcurves lc rgb "#cc6677" notitle, '' index 4 using 1:2 with lines lc rgb "#333333" lw 0.5 notitle, '' index 4 using 1:3 with lines lc rgb "#333333" lw 0.5 notitle
set title "layer 3 values"
plot 'kv_channel_ranges.dat' index 5 using 1:2:3 with filledcurves lc rgb "#cc6677" notitle, '' index 5 using 1:2 with lines lc rgb "#333333" lw 0.5 notitle, '' index 5 using 1:3 with lines lc rgb "#333333" lw 0.5 notitle
unset multiplot
set terminal svg noenhanced size 1140,700 dynamic
set output "kv_channel_ranges.svg"
set multiplot layout 2,3 title "Per-channel ranges: visual tokens"
set title "layer 0 keys"
plot 'kv_channel_ranges.dat' index 0 using 1:2:3 with filledcurves lc rgb "#4477aa" notitle, '' index 0 using 1:2 with lines lc rgb "#333333" lw 0.5 notitle, '' index 0 using 1:3 with lines lc rgb "#333333" lw 0.5 notitle
set title "layer 2 keys"
plot 'kv_channel_ranges.dat' index 1 using 1:2:3 with filledcurves lc rgb "#4477aa" notitle, '' index 1 using 1:2 with lines lc rgb "#333333" lw 0.5 notitle, '' index 1 using 1:3 with lines lc rgb "#333333" lw 0.5 notitle
set title "layer 3 keys"
plot 'kv_channel_ranges.dat' index 2 using 1:2:3 with filledcurves lc rgb "#4477aa" notitle, '' index 2 using 1:2 with lines lc rgb "#333333" lw 0.5 notitle, '' index 2 using 1:3 with lines lc rgb "#333333" lw 0.5 notitle
set title "layer 0 values"
plot 'kv_channel_ranges.dat' index 3 using 1:2:3 with filledcurves lc rgb "#cc6677" notitle, '' index 3 using 1:2 with lines lc rgb "#333333" lw 0.5 notitle, '' index 3 using 1:3 with lines lc rgb "#333333" lw 0.5 notitle
set title "layer 2 values"
plot 'kv_channel_ranges.dat' index 4 using 1:2:3 with filledcurves lc rgb "#cc6677" notitle, '' index 4 using 1:2 with lines lc rgb "#333333" lw 0.5 notitle, '' index 4 using 1:3 with lines lc rgb "#333333" lw 0.5 notitle
set title "layer 3 values"
plot 'kv_channel_ranges.dat' index 5 using 1:2:3 with filledcurves lc rgb "#cc6677" notitle, '' index 5 using 1:2 with lines lc rgb "#333333" lw 0.5 notitle, '' index 5 using 1:3 with lines lc rgb "#333333" lw 0.5 notitle
unset multiplot
