# Speedup against the serial baseline vs workers: measured CPU (and GPU)
# runs, the ideal line, the scaling model's prediction dashed.
load 'plots/common.gp'
set title sprintf('Speedup over %s%s', baseline, datanote)
set xlabel 'workers (CPU: ranks x threads; GPU: GPUs)'
set ylabel sprintf('speedup = T(%s) / T', baseline)
set logscale x 2
set xrange [0.8:40]
# Log-log: the ideal line is the diagonal, and a GPU tens of times faster than
# one core stays on the chart with the CPU runs.
set logscale y 2
set yrange [0.5:*]
eval "plot x title 'ideal' ls 3" \
    . ", cpu using 'workers':(on_cpu(column('speedup'))) with linespoints ls 1 title 'CPU, measured'" \
    . series(has_model, "model using 'workers':(model_cpu(column('speedup'))) with lines ls 4 title 'CPU, scaling model'") \
    . series(has_gpu, "gpu using 'workers':(on_gpu(column('speedup'))) with points ls 2 title 'GPU, measured'") \
    . series(has_model && has_gpu, "model using 'workers':(model_gpu(column('speedup'))) with lines ls 5 title 'GPU, scaling model'")
