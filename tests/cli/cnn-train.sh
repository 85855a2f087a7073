# cnn-train: a tiny end-to-end run on synthetic 32x32 images (reference
# backend: slow, so 4 train images, batch 2, 2 epochs): every output with its
# header, bit-identical weights on a rerun with another thread count, --resume
# after --max-steps equal to the uninterrupted run, NaN loss, bad inputs.
. tests/cli/lib.sh

fundus-synth --count 8 --size 32 --seed 3 --format pixels -q -o "$T/all.shard"
shard-split --ratios 50,25,25 --stratify --seed 1 -q -o "$T/s" "$T/all.shard" # 4 / 2 / 2, both classes each
S="--train $T/s/train.shard --val $T/s/val.shard --test $T/s/test.shard --epochs 2 --batch 2 --backend ref -q"

check "trains (2 threads)" cnn-train $S --threads 2 --out "$T/a"
for f in log.csv predictions-val.csv predictions-test.csv results.csv model.safetensors last.safetensors \
    state.safetensors; do
    if [ -s "$T/a/$f" ]; then ok "writes $f"; else not_ok "writes $f"; fi
done
head -1 "$T/a/log.csv" >"$T/got.txt"
echo "epoch,lr,train_loss,train_acc,val_loss,val_acc,val_auc,epoch_seconds,images_per_second,data_wait_seconds" >"$T/want.txt"
same "log.csv header" "$T/want.txt" "$T/got.txt"
if [ "$(wc -l <"$T/a/log.csv")" = 3 ] && cut -d, -f1,2 "$T/a/log.csv" | tail -1 | grep -q '^2,0.0005005$'; then
    ok "log.csv: a row per epoch, cosine-annealed lr"
else not_ok "log.csv: a row per epoch, cosine-annealed lr" "$(cat "$T/a/log.csv")"; fi
head -1 "$T/a/predictions-test.csv" >"$T/got.txt"
echo "id,label,p_glaucoma,prediction" >"$T/want.txt"
same "predictions header" "$T/want.txt" "$T/got.txt"
if [ "$(wc -l <"$T/a/predictions-test.csv")" = 3 ] && [ "$(wc -l <"$T/a/predictions-val.csv")" = 3 ]; then
    ok "predictions: the whole val and test splits"
else not_ok "predictions: the whole val and test splits"; fi
want="config,dataset,device,device_name,ranks,threads_per_rank,amp,model_parallel,batch_per_rank,epochs,image_size,train_images,train_seconds,images_per_second,data_wait_seconds,final_train_loss,val_acc,val_auc,test_acc,test_auc,test_sensitivity,test_specificity,test_f1,peak_rss_mb,peak_gpu_mb,git_rev,started_at"
# DESIGN.md's columns first, then where the time went (data parallel, model parallel), and fp16's skipped steps.
want="$want,sync_bn,steps,compute_seconds,allreduce_seconds,allreduce_exposed_seconds,allreduce_full_seconds,grad_mb"
want="$want,micro_batches,stage_busy_seconds,gpus_per_rank,steps_skipped"
if [ "$(head -1 "$T/a/results.csv")" = "$want" ] && [ "$(wc -l <"$T/a/results.csv")" = 2 ] &&
    [ "$(sed -n 2p "$T/a/results.csv" | awk -F, '{print NF}')" = 38 ]; then
    ok "results.csv: the DESIGN.md columns, one row"
else not_ok "results.csv: the DESIGN.md columns, one row" "$(cat "$T/a/results.csv")"; fi

check "trains again (1 thread)" cnn-train $S --threads 1 --out "$T/b"
same "rerun with 1 thread: model.safetensors bit-identical" "$T/a/model.safetensors" "$T/b/model.safetensors"
same "rerun with 1 thread: last.safetensors bit-identical" "$T/a/last.safetensors" "$T/b/last.safetensors"

check "stops after --max-steps 3 (in epoch 2)" cnn-train $S --threads 2 --out "$T/c" --max-steps 3
if [ -e "$T/c/results.csv" ]; then not_ok "a stopped run writes no results"; else ok "a stopped run writes no results"; fi
cp -r "$T/c" "$T/d" # step 3's checkpoint, damaged below
check "--resume continues" cnn-train $S --threads 2 --out "$T/c" --resume
same "resumed: model.safetensors equals the uninterrupted run" "$T/a/model.safetensors" "$T/c/model.safetensors"
same "resumed: last.safetensors equals the uninterrupted run" "$T/a/last.safetensors" "$T/c/last.safetensors"
same "resumed: test predictions equal" "$T/a/predictions-test.csv" "$T/c/predictions-test.csv"
cut -d, -f1-7 "$T/a/log.csv" >"$T/want.txt"
cut -d, -f1-7 "$T/c/log.csv" >"$T/got.txt"
same "resumed: the same log (but timings)" "$T/want.txt" "$T/got.txt"

# A damaged trainer state, a value beyond what the run can have reached:
# one line naming it (a batch index of -5 was read before the epoch's
# order). The batch to go on at is the trainer's to check against the
# epoch's batches (2 here).
damaged() { # DIR KEY VALUE: $T/d's checkpoint with KEY set to VALUE
    cp -r "$T/d" "$1"
    ${PYTHON:-/usr/bin/python3} - "$1/state.safetensors" "$2" "$3" <<'PYEOF'
import json, struct, sys
path, key, value = sys.argv[1:]
b = open(path, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
head = json.loads(b[8:8 + n])
head["__metadata__"][key] = value
new = json.dumps(head, separators=(",", ":")).encode()
new += b" " * (-len(new) % 8)
open(path, "wb").write(struct.pack("<Q", len(new)) + new + b[8 + n:])
PYEOF
}
damaged "$T/d1" next_batch -5
check_fails "a trainer state at batch -5: one line" 1 \
    "^cnn-train: .*/state.safetensors: next_batch is not a whole number from 0 to [0-9]+: '-5'$" \
    cnn-train $S --out "$T/d1" --resume
damaged "$T/d2" next_batch 3
check_fails "a trainer state at batch 3 of an epoch of 2: one line" 1 \
    "^cnn-train: training: the epoch is to go on at batch 3, and it has 2$" cnn-train $S --out "$T/d2" --resume
damaged "$T/d3" correct 99
check_fails "a trainer state with more hits than images: one line" 1 \
    "^cnn-train: .*/state.safetensors: correct is not a whole number from 0 to [0-9]+: '99'$" \
    cnn-train $S --out "$T/d3" --resume
damaged "$T/d4" loss_sum nan
check_fails "a trainer state whose loss sum is NaN: one line" 1 \
    "^cnn-train: .*/state.safetensors: loss_sum is not a number from 0 up: 'nan'$" \
    cnn-train $S --out "$T/d4" --resume
damaged "$T/d5" epoch 3
check_fails "a trainer state past the last epoch: one line" 1 \
    "^cnn-train: .*/state.safetensors: epoch is not a whole number from 0 to 2: '3'$" \
    cnn-train $S --out "$T/d5" --resume

check_fails "NaN loss: stops naming the step" 1 'step [0-9]+: the (loss|gradient norm) is' \
    cnn-train $S --epochs 1 --lr 1e30 --out "$T/nan"
check_fails "resume with other settings" 1 'started with batch 2, this one has 4' \
    cnn-train $S --batch 4 --out "$T/a" --resume
check_fails "a folder holding a run" 1 'holds a run already' cnn-train $S --out "$T/a"
check_fails "missing shard" 1 'nope.shard' cnn-train $S --train "$T/nope.shard" --out "$T/x"
fundus-synth --count 2 --size 40 --seed 4 --format pixels -q -o "$T/big.shard"
check_fails "val of another image size" 1 'every split needs one size' \
    cnn-train $S --val "$T/big.shard" --out "$T/x"
cat "$T/s/train.shard" "$T/big.shard" >"$T/mixed.shard"
check_fails "train of mixed image sizes" 1 'all images must have one size' \
    cnn-train $S --train "$T/mixed.shard" --out "$T/x"
fundus-synth --count 2 --size 32 --seed 5 --glaucoma-fraction 0 --format pixels -q -o "$T/one.shard"
check_fails "single-class val: AUC undefined" 1 'ROC AUC is undefined' cnn-train $S --val "$T/one.shard" --out "$T/x"
if cnn-train --train "$T/s/train.shard" --val "$T/one.shard" --select acc --backend ref --max-steps 0 \
    --out "$T/acc" 2>"$T/acc.err" && grep -q 'val AUC is undefined.*accuracy is reported' "$T/acc.err"; then
    ok "single-class val with --select acc: runs, says AUC is undefined"
else not_ok "single-class val with --select acc: runs, says AUC is undefined" "$(cat "$T/acc.err")"; fi
check_fails "single-class train" 1 'needs both classes' cnn-train $S --train "$T/one.shard" --out "$T/x"
: >"$T/empty.shard"
check_fails "an empty file" 1 'an empty file, not a shard' cnn-train $S --test "$T/empty.shard" --out "$T/x"
shard-split --ratios 100,0,0 -q -o "$T/e" "$T/one.shard"
check_fails "an empty split" 1 'no records: the split is empty' cnn-train $S --test "$T/e/test.shard" --out "$T/x"
: >"$T/file"
check_fails "unwritable --out" 1 'file' cnn-train $S --out "$T/file/run"
check_fails "missing --val" 2 'required' cnn-train --train "$T/s/train.shard" --out "$T/x"
check_fails "--allreduce: nccl or mpi" 2 "cnn-train: --allreduce: nccl or mpi, not 'gloo'" cnn-train $S --allreduce gloo --out "$T/x"
check_fails "--conv-algos needs --device cuda" 2 "cnn-train: --conv-algos chooses cuDNN's algorithms: it needs --device cuda" \
    cnn-train $S --conv-algos "$T/algos.txt" --out "$T/x"
check_fails "--loss-scale needs --amp fp16" 2 "cnn-train: --loss-scale scales fp16's loss: it needs --amp fp16" \
    cnn-train $S --loss-scale 256 --out "$T/x"
check_fails "--loss-scale: a power of two" 2 "cnn-train: --loss-scale: a power of two, not '3'" \
    cnn-train $S --amp fp16 --loss-scale 3 --out "$T/x"
no_tmp_left "no temporaries left" "$T/a"
finish
