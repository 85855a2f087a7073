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
# Rows of a table are CPU or GPU runs; the other kind reads as missing.
is_cpu(s) = strstrt(s, 'cpu') == 1
on_cpu(v) = is_cpu(strcol('device')) ? v : NaN
on_gpu(v) = is_cpu(strcol('device')) ? NaN : v
# Rows in a file past its header (0 for none or a missing file).
rows(f) = int(system(sprintf("[ -f '%s' ] && tail -n +2 '%s' | grep -c . || echo 0", f, f)))
has_gpu = rows(gpu) > 1
# A plot command is built as a string: series whose file has no rows are left out.
series(ok, s) = ok ? ', '.s : ''
datanote = (data eq 'synth') ? ' (synthetic data)' : sprintf(' (%s)', data)

# Series: the tables' `series` column (metrics-report --table and --predict):
# CPU or DDP (GPUs), +AMP (fp16) or +bf16, +MP (model parallel). Each has a
# line of its own in a colour of its own, the scaling model's the same colour
# dashed. The tables list a series' rows one after another (by workers), so a
# line joins them; other rows read as missing, which breaks no line of theirs.
# (CPU+AMP: fp16 on a CPU, which the pipeline does not run, for completeness.)
SERIES = 'CPU CPU+bf16 CPU+MP CPU+bf16+MP DDP DDP+AMP DDP+AMP+MP DDP+bf16 DDP+MP DDP+bf16+MP CPU+AMP CPU+AMP+MP'
set style line 11 lc rgb '#1f77b4' lw 2 pt 7 ps 1.2
set style line 12 lc rgb '#17becf' lw 2 pt 9 ps 1.2
set style line 13 lc rgb '#9467bd' lw 2 pt 11 ps 1.2
set style line 14 lc rgb '#8c564b' lw 2 pt 13 ps 1.2
set style line 15 lc rgb '#d62728' lw 2 pt 5 ps 1.2
set style line 16 lc rgb '#ff7f0e' lw 2 pt 9 ps 1.2
set style line 17 lc rgb '#2ca02c' lw 2 pt 13 ps 1.2
set style line 18 lc rgb '#e377c2' lw 2 pt 11 ps 1.2
set style line 19 lc rgb '#7f7f7f' lw 2 pt 15 ps 1.2
set style line 20 lc rgb '#bcbd22' lw 2 pt 3 ps 1.2
set style line 21 lc rgb '#393b79' lw 2 pt 1 ps 1.2
set style line 22 lc rgb '#637939' lw 2 pt 2 ps 1.2
index_of(s, i) = i > words(SERIES) ? 0 : word(SERIES, i) eq s ? i : index_of(s, i + 1)
style_of(s) = 10 + index_of(s, 1)
# A series' measured rows are in the CPU table (CPU...) or the GPU one.
table_of(s) = strstrt(s, 'CPU') == 1 ? 'cpu' : 'gpu'
in_series(s, v) = strcol('series') eq s ? v : NaN
# The model's line of a series: on the CPU the 1-thread family (cpux*, not
# cpux*t2), on GPUs every fitted family of the series.
model_of(s, v) = strcol('series') eq s && strstrt(strcol('family'), 'cpux*t') != 1 ? v : NaN
# Rows of series s in file f, less those of families starting with skip
# (0 for a missing file): a plot of none fails, so such series are left out.
count(f, s, skip) = int(system(sprintf("[ -f '%s' ] && awk -F, -v s='%s' -v skip='%s' 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == \"series\") c = i; if ($i == \"family\") g = i }; next } c && $c == s && !(g && skip != \"\" && index($g, skip) == 1) { n++ } END { print n + 0 }' '%s' || echo 0", f, s, skip, f)))
# The series with measured rows and with model rows, as word lists.
measured_series = ''
modeled_series = ''
do for [i = 1:words(SERIES)] {
    s = word(SERIES, i)
    if (count(value(table_of(s)), s, '') > 0) { measured_series = measured_series . ' ' . s }
    if (count(model, s, 'cpux*t') > 0) { modeled_series = modeled_series . ' ' . s }
}
# Plot clauses, each starting with ', ': column col of every measured series
# (with linespoints), of every modeled one (dashed lines).
measured_clause(s, col) = sprintf(", %s using 'workers':(in_series('%s', column('%s'))) with linespoints ls %d title '%s, measured'", table_of(s), s, col, style_of(s), s)
model_clause(s, col) = sprintf(", model using 'workers':(model_of('%s', column('%s'))) with lines ls %d dt 2 lw 1.5 title '%s, scaling model'", s, col, style_of(s), s)
measured_lines(col, i) = i > words(measured_series) ? '' : measured_clause(word(measured_series, i), col) . measured_lines(col, i + 1)
model_lines(col, i) = i > words(modeled_series) ? '' : model_clause(word(modeled_series, i), col) . model_lines(col, i + 1)
# Every series of a column: measured, then the model.
series_lines(measured_col, model_col) = measured_lines(measured_col, 1) . model_lines(model_col, 1)
