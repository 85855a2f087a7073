# Test accuracy and ROC AUC vs workers: does parallel training change what
# the model learns? (Same recipe and epochs; more ranks mean fewer, larger
# global batches.)
load 'plots/common.gp'
set title sprintf('Test accuracy and AUC%s', datanote)
set xlabel 'workers (CPU: ranks x threads; GPU: GPUs)'
set ylabel 'test split'
set logscale x 2
set xrange [0.8:40]
set yrange [0:1.05]
set key bottom right
eval "plot cpu using 'workers':(on_cpu(column('test_acc'))) with linespoints ls 1 title 'CPU, accuracy'" \
    . ", cpu using 'workers':(on_cpu(column('test_auc'))) with linespoints ls 1 dt 2 pt 6 title 'CPU, ROC AUC'" \
    . series(has_gpu, "gpu using 'workers':(on_gpu(column('test_acc'))) with points ls 2 title 'GPU, accuracy'") \
    . series(has_gpu, "gpu using 'workers':(on_gpu(column('test_auc'))) with points ls 2 pt 4 title 'GPU, ROC AUC'")
