# Loss and accuracy per epoch of every run (log.csv in each run's folder):
# train solid, validation dashed, one colour per run.
load 'plots/common.gp'
name(d) = d[strstrt(d, '/runs/') + 6:]
n = words(runs)
set multiplot layout 1,2 title sprintf('Training curves%s', datanote)
set xlabel 'epoch'
set xtics 1
set key top right
if (n == 0) {
    set label 1 'no run folders with a log.csv' at graph 0.5, 0.5 center
    set xrange [0:1]; set yrange [0:1]
    plot 2 notitle
    plot 2 notitle
} else {
    set ylabel 'loss'
    plot for [i=1:n] word(runs, i).'/log.csv' using 'epoch':'train_loss' with linespoints lc i lw 2 pt 7 title name(word(runs, i)).' train', \
         for [i=1:n] word(runs, i).'/log.csv' using 'epoch':'val_loss' with linespoints lc i lw 2 dt 2 pt 6 title name(word(runs, i)).' val'
    set ylabel 'accuracy'
    set yrange [0:1.05]
    set key bottom right
    plot for [i=1:n] word(runs, i).'/log.csv' using 'epoch':'train_acc' with linespoints lc i lw 2 pt 7 title name(word(runs, i)).' train', \
         for [i=1:n] word(runs, i).'/log.csv' using 'epoch':'val_acc' with linespoints lc i lw 2 dt 2 pt 6 title name(word(runs, i)).' val'
}
unset multiplot
