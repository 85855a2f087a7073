# Training time (train_seconds, the epochs without evaluation) vs workers:
# measured CPU (and GPU) runs, the scaling model's prediction dashed.
load 'plots/common.gp'
set title sprintf('Training time%s', datanote)
set xlabel 'workers (CPU: ranks x threads; GPU: GPUs)'
set ylabel 'training time (s)'
set logscale x 2
set xrange [0.8:40]
set key top right
if (has_gpu) { set logscale y 10 } else { set yrange [0:*] }
eval "plot cpu using 'workers':(on_cpu(column('train_seconds'))) with linespoints ls 1 title 'CPU, measured'" \
    . series(has_model, "model using 'workers':(model_cpu(column('seconds'))) with lines ls 4 title 'CPU, scaling model'") \
    . series(has_gpu, "gpu using 'workers':(on_gpu(column('train_seconds'))) with points ls 2 title 'GPU, measured'") \
    . series(has_model && has_gpu, "model using 'workers':(model_gpu(column('seconds'))) with lines ls 5 title 'GPU, scaling model'")
