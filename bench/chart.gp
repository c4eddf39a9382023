# Bar chart of sluice/PgBouncer ratios per scenario, drawn by bench/run.
# Called as: gnuplot -e "datafile='...'; outfile='...'; subtitle='...'; empty=0; ymax=2" bench/chart.gp
# datafile columns: scenario  tps_ratio  cpu_ratio   (NaN where a figure is missing)
set terminal pngcairo size 1100,600 font "sans,10"
set output outfile
set datafile missing "NaN"
set title "sluice / PgBouncer, median of rounds\n{/*0.8 ".subtitle."}"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel "ratio (1 = same as PgBouncer)"
set grid ytics
set key below horizontal
set xtics nomirror
if (!exists("ymax")) ymax = 2
set yrange [0:ymax]
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5 lc rgb "#333333"
if (empty) {
    unset arrow 1
    set label 1 "no sluice/PgBouncer ratios in this run (see RESULTS.md)" at graph 0.5, graph 0.6 center
    set xrange [0:1]
    set yrange [0:2]
    unset xtics
    plot 1 notitle lc rgb "#ffffff"
} else {
    plot datafile using 2:xtic(1) title "TPS (higher is better)" lc rgb "#2b8cbe", \
         '' using 3 title "proxy CPU per transaction (lower is better)" lc rgb "#e6550d", \
         '' using ($0 - 1.0/6):2:(sprintf("%.2f", $2)) with labels offset 0,0.7 notitle, \
         '' using ($0 + 1.0/6):3:(sprintf("%.2f", $3)) with labels offset 0,0.7 notitle
}
