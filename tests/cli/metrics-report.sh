#!/bin/sh
# metrics-report: golden output on a small hand-made predictions file (the
# numbers worked out in the comments), --csv/--pool/--threshold/--roc/stdin,
# the --table speedup and efficiency arithmetic, and bad input, each with one
# error naming the file and line. Agreement with scikit-learn on large and
# awkward inputs is tests/ref/metrics_parity.py's job.
. "$(dirname "$0")/lib.sh"

# 3 glaucoma, 3 normal. Prediction column: a, e right positives (tp 2), c a
# missed one (fn 1), d a false alarm (fp 1), b, f right negatives (tn 2): every
# ratio 2/3. AUC: the positives 0.9, 0.8 outrank all three negatives, 0.4
# outranks 0.2 and 0.1: 8 of 9 pairs.
cat >"$T/a.csv" <<'CSV'
id,label,p_glaucoma,prediction
a,1,0.9,1
b,0,0.2,0
c,1,0.4,0
d,0,0.6,1
e,1,0.8,1
f,0,0.1,0
CSV
cat >"$T/want.txt" <<TXT
$T/a.csv: 6 predictions, 3 glaucoma (1), 3 normal (0); decision: prediction column
  accuracy     0.6667
  sensitivity  0.6667
  specificity  0.6667
  precision    0.6667
  f1           0.6667
  auc          0.8889
  confusion matrix (rows: true class, columns: predicted class)
               pred 0   pred 1
      true 0        2        1
      true 1        1        2
TXT
check "report" metrics-report "$T/a.csv"
same "report: golden" "$T/.out" "$T/want.txt"

# --threshold 0.3: c (0.4) becomes a hit: tp 3, fn 0, fp 1 (d), tn 2.
metrics-report --csv --threshold 0.3 "$T/a.csv" >"$T/t.csv" 2>"$T/err"
cat >"$T/want.csv" <<TXT
file,n,positives,negatives,tn,fp,fn,tp,accuracy,sensitivity,specificity,precision,f1,auc
$T/a.csv,6,3,3,2,1,0,3,0.83333333333333337,1,0.66666666666666663,0.75,0.8571428571428571,0.88888888888888884
TXT
same "--csv --threshold 0.3: golden" "$T/t.csv" "$T/want.csv"

metrics-report --csv - <"$T/a.csv" >"$T/stdin.csv" 2>"$T/err"
metrics-report --csv <"$T/a.csv" >"$T/stdin2.csv" 2>"$T/err"
[ "$(cut -d, -f2- "$T/stdin.csv")" = "$(metrics-report --csv "$T/a.csv" | cut -d, -f2-)" ] &&
    grep -q '^stdin,' "$T/stdin.csv" && ok "stdin" || not_ok "stdin" "$(cat "$T/stdin.csv")"
same "no file means stdin" "$T/stdin.csv" "$T/stdin2.csv"

# Two files: two reports; --pool: one over the 12 rows.
metrics-report --csv "$T/a.csv" "$T/a.csv" >"$T/two.csv" 2>"$T/err"
[ "$(wc -l <"$T/two.csv")" = 3 ] && ok "one row per file" || not_ok "one row per file" "$(cat "$T/two.csv")"
metrics-report --csv --pool "$T/a.csv" "$T/a.csv" >"$T/pool.csv" 2>"$T/err"
[ "$(tail -1 "$T/pool.csv" | cut -d, -f1-8)" = "pooled,12,6,6,4,2,2,4" ] && ok "--pool" ||
    not_ok "--pool" "$(cat "$T/pool.csv")"

# ROC points: (0,0) at max + 1 = 1.9, then one per distinct score from the top.
metrics-report --roc "$T/roc.csv" -o "$T/o.txt" "$T/a.csv" 2>"$T/err"
cat >"$T/want-roc.csv" <<'TXT'
fpr,tpr,threshold
0,0,1.8999999999999999
0,0.33333333333333331,0.90000000000000002
0,0.66666666666666663,0.80000000000000004
0.33333333333333331,0.66666666666666663,0.59999999999999998
0.33333333333333331,1,0.40000000000000002
0.66666666666666663,1,0.20000000000000001
1,1,0.10000000000000001
TXT
same "--roc: golden" "$T/roc.csv" "$T/want-roc.csv"
same "-o FILE" "$T/o.txt" "$T/want.txt"
no_tmp_left "no temporaries left" "$T"

metrics-report --ci --boot 200 --seed 3 "$T/a.csv" >"$T/ci1.txt" 2>"$T/err"
metrics-report --ci --boot 200 --seed 3 "$T/a.csv" >"$T/ci2.txt" 2>"$T/err"
same "--ci: deterministic" "$T/ci1.txt" "$T/ci2.txt"
grep -q '^  accuracy     0.6667  95% CI \[' "$T/ci1.txt" && grep -q 'bootstrap: 200 resamples, seed 3' "$T/ci1.txt" &&
    ok "--ci: intervals printed" || not_ok "--ci: intervals printed" "$(cat "$T/ci1.txt")"

# One class: AUC undefined, said once on stderr, the rest reported.
grep -v ',1,' "$T/a.csv" >"$T/neg.csv"
metrics-report "$T/neg.csv" >"$T/neg.txt" 2>"$T/neg.err"
rc=$?
[ $rc = 0 ] && grep -q 'only class 0 present: ROC AUC is undefined' "$T/neg.err" &&
    grep -q '^  auc          undefined' "$T/neg.txt" && grep -q '^  specificity  0.6667' "$T/neg.txt" &&
    ok "single class" || not_ok "single class" "exit $rc: $(cat "$T/neg.err")"

# Speedup tables. cpu1 1000 s is the baseline; cpux2 (2 ranks x 1 thread)
# 500 s: speedup 2, efficiency 1; cpux4t2 (4 x 2 = 8 workers) 200 s and 300 s:
# mean 250 s, speedup 4, efficiency 0.5; h100x1_amp (1 rank on a GPU, its 8
# host threads not counted; an older file: no gpus_per_rank, amp 0, series
# DDP) 40 s: speedup 25, efficiency 25. h100x4_amp_mp (today's columns: 2
# ranks of 2 stages on a GPU each, fp16) 10 s: 4 GPUs, speedup 100,
# efficiency 25, series DDP+AMP+MP.
H=config,dataset,device,device_name,ranks,threads_per_rank,amp,model_parallel,batch_per_rank,epochs,image_size,train_images,train_seconds,images_per_second,data_wait_seconds,final_train_loss,val_acc,val_auc,test_acc,test_auc,test_sensitivity,test_specificity,test_f1,peak_rss_mb,peak_gpu_mb,git_rev,started_at
row() { # config device ranks threads seconds acc auc
    echo "$1,acrima,$2,x,$3,$4,0,0,32,10,224,493,$5,1,0,0.3,0.8,0.9,$6,$7,0.8,0.8,0.8,100,0,abc,2026-01-01"
}
{ echo "$H"; row cpu1 cpu 1 1 1000 0.8 0.9; } >"$T/cpu1.csv"
{ echo "$H"; row cpux2 cpu 2 1 500 0.81 0.91; } >"$T/cpux2.csv"
{ echo "$H"; row cpux4t2 cpu 4 2 200 0.8 0.9; row cpux4t2 cpu 4 2 300 0.9 0.8; } >"$T/cpux4t2.csv"
{ echo "$H"; row h100x1_amp cuda 1 8 40 0.85 ""; } >"$T/h100.csv"
H2=$H,sync_bn,steps,compute_seconds,allreduce_seconds,allreduce_exposed_seconds,allreduce_full_seconds,grad_mb,micro_batches,stage_busy_seconds,gpus_per_rank
mrow() { # config device ranks threads amp model_parallel gpus_per_rank seconds
    echo "$1,acrima,$2,x,$3,$4,$5,$6,32,10,224,493,$8,1,0,0.3,0.8,0.9,0.9,0.95,0.8,0.8,0.8,100,0,abc,2026-01-01,no,80,9,1,0.5,0.2,90,4,4.500;4.400,$7"
}
{ echo "$H2"; mrow h100x4_amp_mp cuda 2 4 fp16 2 2 10; } >"$T/h100mp.csv"
cat >"$T/want-table.csv" <<'TXT'
config,device,workers,runs,train_seconds,speedup,efficiency,test_acc,test_auc,baseline,series
cpu1,cpu,1,1,1000.000,1.0000,1.0000,0.8000,0.9000,cpu1,CPU
cpux2,cpu,2,1,500.000,2.0000,1.0000,0.8100,0.9100,cpu1,CPU
cpux4t2,cpu,8,2,250.000,4.0000,0.5000,0.8500,0.8500,cpu1,CPU
h100x1_amp,cuda,1,1,40.000,25.0000,25.0000,0.8500,,cpu1,DDP
h100x4_amp_mp,cuda,4,1,10.000,100.0000,25.0000,0.9000,0.9500,cpu1,DDP+AMP+MP
TXT
check "--table" metrics-report --table --baseline cpu1 "$T/cpu1.csv" "$T/cpux2.csv" "$T/cpux4t2.csv" "$T/h100.csv" "$T/h100mp.csv"
same "--table: golden" "$T/.out" "$T/want-table.csv"
# The series: precision and model parallelism from the columns, CPU or DDP
# from the device; a config's runs must agree on it.
{ echo "$H2"; mrow cpux2_bf16_mp cpu 2 1 bf16 2 0 400; mrow cpu1t2_bf16 cpu 1 2 bf16 1 0 600;
  mrow h100x2_bf16 cuda 2 4 bf16 1 1 20; mrow h100x1_mp cuda 1 4 fp32 2 1 30; } >"$T/series.csv"
got=$(metrics-report --table --baseline cpu1 "$T/cpu1.csv" "$T/series.csv" 2>&1 | cut -d, -f1,3,11 | tr '\n' ' ')
[ "$got" = "config,workers,series cpu1,1,CPU cpu1t2_bf16,2,CPU+bf16 cpux2_bf16_mp,2,CPU+bf16+MP h100x1_mp,1,DDP+MP h100x2_bf16,2,DDP+bf16 " ] &&
    ok "--table: series CPU+bf16, CPU+bf16+MP, DDP+MP (shared GPU: 1 worker), DDP+bf16" || not_ok "--table: series" "$got"
{ echo "$H2"; mrow h100x4_amp_mp cuda 2 4 fp32 2 2 12; } >"$T/h100mp-fp32.csv"
check_fails "--table: a config in two series" 1 "metrics-report: .*h100mp-fp32.csv: line 2: config h100x4_amp_mp is a DDP\+MP run here but DDP\+AMP\+MP" \
    metrics-report --table --baseline cpu1 "$T/cpu1.csv" "$T/h100mp.csv" "$T/h100mp-fp32.csv"
{ echo "$H"; row cpux2 cpu 4 1 300 0.8 0.9; } >"$T/cpux2-4ranks.csv"
check_fails "--table: a config with two worker counts" 1 "metrics-report: .*cpux2-4ranks.csv: line 2: config cpux2 has 4 workers here but 2 in an earlier run" \
    metrics-report --table --baseline cpu1 "$T/cpu1.csv" "$T/cpux2.csv" "$T/cpux2-4ranks.csv"
{ echo "$H2"; mrow h100x2 cuda 2 4 fp32 1 -1 12; } >"$T/badgpus.csv"
check_fails "--table: bad gpus_per_rank" 1 "metrics-report: .*badgpus.csv: line 2: gpus_per_rank must be an integer" \
    metrics-report --table --baseline cpu1 "$T/cpu1.csv" "$T/badgpus.csv"
metrics-report --summary --baseline cpu1 "$T/cpu1.csv" "$T/h100mp.csv" >"$T/summary.md" 2>"$T/err"
grep -q '^## Model parallel' "$T/summary.md" && grep -q '^| h100x4_amp_mp | DDP+AMP+MP | 2 | 2 | 4 | 2 | 10.0 | 4.500, 4.400 |' "$T/summary.md" &&
    ok "--summary: model-parallel runs, their stages and busy seconds" || not_ok "--summary: model parallel" "$(cat "$T/summary.md" "$T/err" | head -c 600)"
metrics-report --summary --baseline cpu1 "$T/cpu1.csv" "$T/cpux2.csv" >"$T/summary.md" 2>"$T/err"
! grep -q '^## Model parallel' "$T/summary.md" && ok "--summary: no model-parallel section without such runs" ||
    not_ok "--summary: no model-parallel section" "$(head -c 300 "$T/summary.md")"
metrics-report --table --baseline cpux2 "$T/cpu1.csv" "$T/cpux2.csv" >"$T/t2.csv" 2>"$T/err"
[ "$(sed -n 2p "$T/t2.csv" | cut -d, -f1,6,7)" = "cpu1,0.5000,0.5000" ] && ok "--table: another baseline" ||
    not_ok "--table: another baseline" "$(cat "$T/t2.csv")"
check_fails "--table: missing baseline" 1 "metrics-report: cpu9: no run of this baseline config" \
    metrics-report --table --baseline cpu9 "$T/cpu1.csv" "$T/cpux2.csv"
check_fails "--table without --baseline" 2 "metrics-report: --table needs --baseline" metrics-report --table "$T/cpu1.csv"
# One GPU at hand: --bandwidth predicts its kind from the 1-GPU run and a
# nominal link. h100x1_amp: 160 steps in 40 s = 0.25 s/step; 100 MB at
# 100 GB/s = 1 ms a hop-free ring term, 2 ranks: 1 ms + 2 x 20 us, all hidden
# behind backward (0.167 s/step); 80 steps: 20 s; 4 ranks: 40 steps, 10 s.
metrics-report --predict --csv --baseline cpu1 --bandwidth 100 --grad-mb 100 "$T/cpu1.csv" "$T/h100.csv" >"$T/nom.csv" 2>"$T/nom.err"
if grep -qx 'h100x\*_amp,2,2,80,0.0010,0.0000,20.000,50.0000,25.0000,,,,DDP' "$T/nom.csv" &&
    grep -qx 'h100x\*_amp,4,4,40,0.0016,0.0000,10.000,100.0000,25.0000,,,,DDP' "$T/nom.csv" &&
    ! grep -q '^cpux' "$T/nom.csv"; then ok "--predict --bandwidth: a GPU kind from its 1-GPU run and a nominal link"
else not_ok "--predict --bandwidth: a GPU kind from its 1-GPU run and a nominal link" "$(cat "$T/nom.err" "$T/nom.csv")"; fi
metrics-report --predict --baseline cpu1 --bandwidth 100 --grad-mb 100 "$T/cpu1.csv" "$T/h100.csv" >"$T/nom.txt" 2>&1
grep -q '^# h100x\*_amp: predicted from h100x1_amp (.*h100.csv) alone: .*nominal ring bus bandwidth of 100.0 GB/s' "$T/nom.txt" &&
    ok "--predict --bandwidth says what it assumed" || not_ok "--predict --bandwidth says what it assumed" "$(cat "$T/nom.txt")"
check_fails "--predict without --baseline" 2 "metrics-report: --predict needs --baseline" metrics-report --predict "$T/cpu1.csv"
check_fails "--table with --summary" 2 "metrics-report: --table, --predict and --summary: one at a time" \
    metrics-report --table --summary --baseline cpu1 "$T/cpu1.csv"
# Files without the allreduce columns: nothing to fit, said once; the CSV is its header.
metrics-report --predict --csv --baseline cpu1 "$T/cpu1.csv" "$T/cpux2.csv" >"$T/p.csv" 2>"$T/p.err"
[ $? = 0 ] && [ "$(wc -l <"$T/p.csv")" = 1 ] && grep -q 'nothing to predict' "$T/p.err" && ok "--predict: nothing to fit" ||
    not_ok "--predict: nothing to fit" "$(cat "$T/p.err" "$T/p.csv")"
{ echo "$H"; row cpu2 cpu 2 1 fast 0.8 0.9; } >"$T/badtab.csv"
check_fails "--table: bad number" 1 "metrics-report: .*badtab.csv: line 2: train_seconds 'fast' is not a number" \
    metrics-report --table --baseline cpu1 "$T/cpu1.csv" "$T/badtab.csv"
check_fails "--table: not a results file" 1 "metrics-report: .*a.csv: line 1: no column 'config'" \
    metrics-report --table --baseline cpu1 "$T/a.csv"

# Bad input: one error line naming the file (and line), nothing on stdout.
bad() { # NAME PATTERN LINE: a.csv with its 4th line replaced by LINE
    { sed -n 1,3p "$T/a.csv"; printf '%s\n' "$3"; sed -n '5,$p' "$T/a.csv"; } >"$T/bad.csv"
    check_fails "$1" 1 "metrics-report: .*bad.csv: line 4: $2" metrics-report "$T/bad.csv"
}
bad "malformed line" "3 fields, the header has 4" "c,1,0.4"
bad "non-numeric p" "p_glaucoma 'high' is not a number" "c,1,high,1"
bad "p above 1" "p_glaucoma 1.5 is outside \[0, 1\]" "c,1,1.5,1"
bad "p below 0" "p_glaucoma -0.1 is outside \[0, 1\]" "c,1,-0.1,1"
bad "p NaN" "p_glaucoma 'nan' is not a number" "c,1,nan,1"
bad "unknown label" "label '2' is not 0 or 1" "c,2,0.4,0"
bad "empty label" "label is empty" "c,,0.4,0"
bad "bad prediction" "prediction 'yes' is not 0 or 1" "c,1,0.4,yes"
check_fails "missing file" 1 "metrics-report: .*nope.csv: cannot open" metrics-report "$T/nope.csv"
printf 'id,label,score\na,1,0.5\n' >"$T/nocol.csv"
check_fails "missing column" 1 "metrics-report: .*nocol.csv: line 1: no column 'p_glaucoma'" metrics-report "$T/nocol.csv"
head -1 "$T/a.csv" >"$T/empty.csv"
check_fails "header only" 1 "metrics-report: .*empty.csv: no predictions" metrics-report "$T/empty.csv"
check_fails "--roc with two reports" 2 "metrics-report: --roc writes one curve" \
    metrics-report --roc "$T/r.csv" "$T/a.csv" "$T/a.csv"
check_fails "--threshold out of range" 2 "metrics-report: --threshold: 2 is out of range" \
    metrics-report --threshold 2 "$T/a.csv"
# --threshold makes the prediction column unnecessary.
cut -d, -f1-3 "$T/a.csv" >"$T/nopred.csv"
check "no prediction column with --threshold" metrics-report --threshold 0.5 "$T/nopred.csv"
finish
