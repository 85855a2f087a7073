# Shared by every chart (make charts): the terminal from `term` (png or svg),
# the output file `out`, CSV input with a header row read by column name.
# The Makefile passes cpu, gpu, model (tables), runs, rocs (run folders and
# their ROC points), baseline and data as strings.
if (term eq 'svg') {
    set terminal svg size 800,560 dynamic enhanced font 'Helvetica,12' background '#ffffff'
} else {
    set terminal pngcairo size 800,560 enhanced font 'Helvetica,10'
}
set output out
set datafile separator ','
set datafile columnheaders
set grid lc rgb '#dddddd'
set key top left box opaque
set style line 1 lc rgb '#1f77b4' lw 2 pt 7 ps 1.2
set style line 2 lc rgb '#d62728' lw 2 pt 5 ps 1.2
set style line 3 lc rgb '#555555' lw 1 dt 4
set style line 4 lc rgb '#1f77b4' lw 1.5 dt 2
set style line 5 lc rgb '#d62728' lw 1.5 dt 2
# Rows of a table are CPU or GPU runs; the other kind reads as missing.
is_cpu(s) = strstrt(s, 'cpu') == 1
on_cpu(v) = is_cpu(strcol('device')) ? v : NaN
on_gpu(v) = is_cpu(strcol('device')) ? NaN : v
# The model's CPU line: the 1-thread family (cpux*); its GPU lines: the others.
model_cpu(v) = strcol('family') eq 'cpux*' ? v : NaN
model_gpu(v) = strstrt(strcol('family'), 'cpu') == 1 ? NaN : v
# Rows in a file past its header (0 for none or a missing file).
rows(f) = int(system(sprintf("[ -f '%s' ] && tail -n +2 '%s' | grep -c . || echo 0", f, f)))
has_gpu = rows(gpu) > 1
has_model = rows(model) > 0
# A plot command is built as a string: series whose file has no rows are left out.
series(ok, s) = ok ? ', '.s : ''
datanote = (data eq 'synth') ? ' (synthetic data)' : sprintf(' (%s)', data)
