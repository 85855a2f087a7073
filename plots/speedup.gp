# Speedup against the serial baseline vs workers: the ideal line, each
# measured series (common.gp: CPU, DDP, DDP+AMP, DDP+AMP+MP...), the scaling
# model's prediction dashed in its colour.
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
eval "plot x title 'ideal' ls 3".series_lines('speedup', 'speedup')
