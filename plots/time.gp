# Training time (train_seconds, the epochs without evaluation) vs workers:
# each measured series (common.gp: CPU, DDP, DDP+AMP, DDP+AMP+MP...), the
# scaling model's prediction dashed in its colour.
load 'plots/common.gp'
set title sprintf('Training time%s', datanote)
set xlabel 'workers (CPU: ranks x threads; GPU: GPUs)'
set ylabel 'training time (s)'
set logscale x 2
set xrange [0.8:40]
set key top right
if (has_gpu) { set logscale y 10 } else { set yrange [0:*] }
# The tables always hold the baseline: the first clause's ', ' goes.
eval 'plot '.series_lines('train_seconds', 'seconds')[3:]
