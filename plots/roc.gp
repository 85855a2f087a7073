# ROC curves on the test split (the selected epoch's weights) of every run:
# metrics-report --roc points, one line per run, the chance diagonal dashed.
load 'plots/common.gp'
name(f) = f[strstrt(f, '/runs/') + 6:strstrt(f, '/roc-test.csv') - 1]
n = words(rocs)
set title sprintf('ROC, test split%s', datanote)
set xlabel 'false positive rate (1 - specificity)'
set ylabel 'true positive rate (sensitivity)'
set xrange [0:1]
set yrange [0:1]
set size square
set key bottom right
if (n == 0) { set label 1 'no run folders with predictions-test.csv' at graph 0.5, 0.5 center }
if (n == 0) { plot x title 'chance' ls 3 } else {
    plot x title 'chance' ls 3, for [i=1:n] word(rocs, i) using 'fpr':'tpr' with lines lc i lw 2 title name(word(rocs, i))
}
