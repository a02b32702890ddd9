# Pre-softmax scores (after 1/sqrt(d)) of text queries on visual keys: full precision, quantized, quantized and calibrated
# Data: visual_scores.dat. Re-render with `calibq plot <run folder>` or `gnuplot visual_scores.gp` in this folder.
set termoption noenhanced
set xlabel "pre-softmax score"
set ylabel "density"
set grid
set key outside right top
set terminal pngcairo noenhanced size 900,990 font ",10"
set output "visual_scores.png"
set multiplot layout 3,1 title "Visual pre-softmax scores"
set title "layer 0"
plot 'visual_scores.dat' index 0 using 1:2 with steps lw 2 title "fp", 'visual_scores.dat' index 1 using 1:2 with steps lw 2 title "calibquant:bits=1,calibrate=off", 'visual_scores.dat' index 2 using 1:2 with steps lw 2 title "calibquant:bits=1"
set title "layer 2"
plot 'visual_scores.dat' index 3 using 1:2 with steps lw 2 title "fp", 'visual_scores.dat' index 4 using 1:2 with steps lw 2 title "calibquant:bits=1,calibrate=off", 'visual_scores.dat' index 5 using 1:2 with steps lw 2 title "calibquant:bits=1"
set title "layer 3"
plot 'visual_scores.dat' index 6 using 1:2 with steps lw 2 title "fp", 'visual_scores.dat' index 7 using 1:2 with steps lw 2 title "calibquant:bits=1,calibrate=off", 'visual_scores.dat' index 8 using 1:2 with steps lw 2 title "calibquant:bits=1"
unset multiplot
set terminal svg noenhanced size 900,990 dynamic
set output "visual_scores.svg"
set multiplot layout 3,1 title "Visual pre-softmax scores"
set title "layer 0"
plot 'visual_scores.dat' index 0 using 1:2 with steps lw 2 title "fp", 'visual_scores.dat' index 1 using 1:2 with steps lw 2 title "calibquant:bits=1,calibrate=off", 'visual_scores.dat' index 2 using 1:2 with steps lw 2 title "calibquant:bits=1"
set title "layer 2"
plot 'visual_scores.dat' index 3 using 1:2 with steps lw 2 title "fp", 'visual_scores.dat' index 4 using 1:2 with steps lw 2 title "calibquant:bits=1,calibrate=off", 'visual_scores.dat' index 5 using 1:2 with steps lw 2 title "calibquant:bits=1"
set title "layer 3"
plot 'visual_scores.dat' index 6 using 1:2 with steps lw 2 title "fp", 'visual_scores.dat' index 7 using 1:2 with steps lw 2 title "calibquant:bits=1,calibrate=off", 'visual_scores.dat' index 8 using 1:2 with steps lw 2 title "calibquant:bits=1"
unset multiplot
