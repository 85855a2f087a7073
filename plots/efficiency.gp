# Efficiency = speedup / workers vs workers (1 is perfect scaling): each
# measured series (common.gp: CPU, DDP, DDP+AMP, DDP+AMP+MP...), the scaling
# model's prediction dashed in its colour.
load 'plots/common.gp'
set title sprintf('Parallel efficiency against %s%s', baseline, datanote)
set xlabel 'workers (CPU: ranks x threads; GPU: GPUs)'
set ylabel 'efficiency = speedup / workers'
set logscale x 2
set xrange [0.8:40]
set key bottom left
if (has_gpu) { set logscale y 2 } else { set yrange [0:1.2] }
eval "plot 1 title 'perfect' ls 3".series_lines('efficiency', 'efficiency')
