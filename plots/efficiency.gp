# Efficiency = speedup / workers vs workers (1 is perfect scaling): measured
# CPU (and GPU) runs, the scaling model's prediction dashed.
load 'plots/common.gp'
set title sprintf('Parallel efficiency against %s%s', baseline, datanote)
set xlabel 'workers (CPU: ranks x threads; GPU: GPUs)'
set ylabel 'efficiency = speedup / workers'
set logscale x 2
set xrange [0.8:40]
set key bottom left
if (has_gpu) { set logscale y 2 } else { set yrange [0:1.2] }
eval "plot 1 title 'perfect' ls 3" \
    . ", cpu using 'workers':(on_cpu(column('efficiency'))) with linespoints ls 1 title 'CPU, measured'" \
    . series(has_model, "model using 'workers':(model_cpu(column('efficiency'))) with lines ls 4 title 'CPU, scaling model'") \
    . series(has_gpu, "gpu using 'workers':(on_gpu(column('efficiency'))) with points ls 2 title 'GPU, measured'") \
    . series(has_model && has_gpu, "model using 'workers':(model_gpu(column('efficiency'))) with lines ls 5 title 'GPU, scaling model'")
