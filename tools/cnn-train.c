// cnn-train: trains the study's MedicalCNN on shards of images of one size
// with the study's recipe (lib/nn/trainer.h), selects the best epoch on the
// validation split, evaluates it on the whole test split and writes the
// run's folder: log.csv, predictions-val.csv, predictions-test.csv,
// results.csv, model.safetensors, and the trainer state for --resume.
#include "core/fs.h"
#include "dist/comm.h"
#include "dist/sampler.h"
#include "nn/checkpoint.h"
#include "nn/pipe.h"
#include "nn/safetensors.h"
#include "nn/schedule.h"
#include "nn/trainer.h"
#include "core/csv.h"
#include "toolkit.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: cnn-train --train T.shard --val V.shard [--test X.shard] --out DIR [options]\n"
    "Train MedicalCNN on shards of RGB images of one size (pixels, or encoded files that\n"
    "are decoded) with the study's recipe; keep the epoch with the best validation score.\n"
    "Writes DIR/log.csv, predictions-val.csv, predictions-test.csv (with --test),\n"
    "results.csv, model.safetensors (the selected weights, a PyTorch state_dict) and\n"
    "last.safetensors + state.safetensors (for --resume).\n"
    "  --train, --val, --test SHARD   the splits (--test optional)\n"
    "  -o, --out DIR          the run's folder (created; must not hold another run)\n"
    "  --epochs N             10;  --batch N  32 (the last batch may be smaller; one of 1 is dropped)\n"
    "  --lr X                 1e-3, cosine-annealed per epoch to 1e-6\n"
    "  --weight-decay X       1e-4, decoupled (AdamW), on every parameter unless\n"
    "  --no-decay-bn-bias     BatchNorm weights/biases and Linear biases get no decay\n"
    "  --select auc|acc|last  how the kept epoch is chosen (validation ROC AUC)\n"
    "  --seed N               42: initial weights, order, augmentation, dropout\n"
    "  --backend ref|cpu|cuda|auto   auto: the fastest CPU backend; cuda: the GPU (builds with USE_CUDA)\n"
    "  --device cpu|cuda      the same as --backend auto|cuda; each rank uses GPU (local rank)\n"
    "  --resume               continue the run in DIR exactly where it stopped\n"
    "  --max-steps N          stop after N optimizer steps in all (state saved; --resume goes on)\n"
    "  --no-augment, --no-dropout   switch the recipe's augmentation / dropout off (tests)\n"
    "  --config NAME, --dataset NAME   the first columns of results.csv (default: cpu1 or\n"
    "                         cpu1tN for N threads; the train shard's name)\n"
    "  --amp off|bf16|fp16    convolutions on bfloat16 (AVX512-BF16 CPUs, GPUs) or float16 with loss\n"
    "                         scaling (GPUs); BatchNorm, loss and master weights stay fp32\n"
    "  --loss-scale S         with --amp fp16: the loss scale to start at, a power of two (65536, as\n"
    "                         GradScaler's); a step whose gradients overflow is skipped and S halved\n"
    "  --threads N            threads per rank (default: the host's cores shared among its ranks); with\n"
    "                         --device cuda they make the batches (decoding, augmentation)\n"
    "  --conv-algos FILE      with --device cuda: cuDNN's convolution engines measured (the fastest\n"
    "                         deterministic ones) and recorded in FILE, or taken from it where it has\n"
    "                         them, so that reruns compute the same bytes (default: cuDNN's heuristics)\n"
    "Data parallel: mpirun -np N cnn-train ... runs N ranks; each trains on its slice of\n"
    "every epoch (batch per rank), gradients are summed across ranks while backward runs,\n"
    "metrics cover every rank's images, and rank 0 alone writes DIR.\n"
    "  --sync-bn              BatchNorm on the statistics of all ranks' images (default: per rank)\n"
    "  --lr-scale none|linear linear: lr x ranks (the global batch grows with the ranks)\n"
    "  --bucket-mb N          gradient allreduce buckets of N MB (25)\n"
    "  --allreduce nccl|mpi   with --device cuda: gradients summed by NCCL on the GPUs (default) or by\n"
    "                         MPI through host memory; the CPU backends always use MPI\n"
    "  --host-optimizer       with --device cuda: clipping and AdamW on the host, the weights uploaded\n"
    "                         every step (slower; for comparisons: by default they stay on the GPU)\n"
    "Model parallel: the model cut into K stages, each on its own GPU (or CPU thread),\n"
    "micro-batches pipelined through them (GPipe); with mpirun, each rank runs K stages.\n"
    "  --model-parallel K     K stages (1); cut where compute balances, unless\n"
    "  --stages SPEC          the cut by modules: stem,stage1|stage2,stage3_res|stage3_md,stage4_res,fc\n"
    "  --micro-batches M      M micro-batches per batch (1); BatchNorm then uses each one's statistics\n"
    "  --deferred-bn          ... but updates its running statistics once per batch, with the batch's\n"
    "  --allow-shared-gpu     every stage on the rank's one GPU (tests the split on one GPU)\n"
    "  -q, --quiet            no start-up report, notes or progress\n"
    "  -h, --help   this text;  --version   the version\n"
    "example: cnn-train --train train.shard --val val.shard --test test.shard --out runs/cpu1\n";

enum {
    OPT_TRAIN = TOOL_OPT_FIRST_FREE, OPT_VAL, OPT_TEST, OPT_EPOCHS, OPT_BATCH, OPT_LR, OPT_WD, OPT_NO_DECAY,
    OPT_SELECT, OPT_SEED, OPT_BACKEND, OPT_RESUME, OPT_MAX_STEPS, OPT_NO_AUGMENT, OPT_NO_DROPOUT, OPT_CONFIG,
    OPT_DATASET, OPT_AMP, OPT_SYNC_BN, OPT_LR_SCALE, OPT_BUCKET_MB, OPT_DEVICE, OPT_MODEL_PARALLEL, OPT_STAGES,
    OPT_MICRO_BATCHES, OPT_SHARED_GPU, OPT_DEFERRED_BN, OPT_ALLREDUCE, OPT_HOST_OPTIMIZER, OPT_CONV_ALGOS,
    OPT_LOSS_SCALE
};

typedef enum { SELECT_AUC, SELECT_ACC, SELECT_LAST } select_by;
static const char *const SELECT_NAMES[] = {"auc", "acc", "last"};

typedef struct {
    const char *train, *val, *test, *out, *backend, *config, *dataset;
    fu_train_opts o;
    select_by select;
    bool resume, sync_bn, lr_linear;
    int64_t max_steps;
    double bucket_mb;
} options;

static options parse(int argc, char **argv) {
    static const struct option longopts[] = {
        TOOL_COMMON_LONGOPTS,
        {"out", required_argument, 0, 'o'},
        {"train", required_argument, 0, OPT_TRAIN},
        {"val", required_argument, 0, OPT_VAL},
        {"test", required_argument, 0, OPT_TEST},
        {"epochs", required_argument, 0, OPT_EPOCHS},
        {"batch", required_argument, 0, OPT_BATCH},
        {"lr", required_argument, 0, OPT_LR},
        {"weight-decay", required_argument, 0, OPT_WD},
        {"no-decay-bn-bias", no_argument, 0, OPT_NO_DECAY},
        {"select", required_argument, 0, OPT_SELECT},
        {"seed", required_argument, 0, OPT_SEED},
        {"backend", required_argument, 0, OPT_BACKEND},
        {"device", required_argument, 0, OPT_DEVICE},
        {"resume", no_argument, 0, OPT_RESUME},
        {"max-steps", required_argument, 0, OPT_MAX_STEPS},
        {"no-augment", no_argument, 0, OPT_NO_AUGMENT},
        {"no-dropout", no_argument, 0, OPT_NO_DROPOUT},
        {"config", required_argument, 0, OPT_CONFIG},
        {"dataset", required_argument, 0, OPT_DATASET},
        {"amp", required_argument, 0, OPT_AMP},
        {"sync-bn", no_argument, 0, OPT_SYNC_BN},
        {"lr-scale", required_argument, 0, OPT_LR_SCALE},
        {"bucket-mb", required_argument, 0, OPT_BUCKET_MB},
        {"model-parallel", required_argument, 0, OPT_MODEL_PARALLEL},
        {"stages", required_argument, 0, OPT_STAGES},
        {"micro-batches", required_argument, 0, OPT_MICRO_BATCHES},
        {"allow-shared-gpu", no_argument, 0, OPT_SHARED_GPU},
        {"deferred-bn", no_argument, 0, OPT_DEFERRED_BN},
        {"allreduce", required_argument, 0, OPT_ALLREDUCE},
        {"host-optimizer", no_argument, 0, OPT_HOST_OPTIMIZER},
        {"conv-algos", required_argument, 0, OPT_CONV_ALGOS},
        {"loss-scale", required_argument, 0, OPT_LOSS_SCALE},
        {0, 0, 0, 0},
    };
    options op = {.backend = "auto", .o = fu_train_defaults(), .select = SELECT_AUC, .max_steps = -1, .bucket_mb = 25};
    int c;
    while ((c = tool_getopt(argc, argv, TOOL_COMMON_SHORTOPTS, longopts)) != -1) {
        switch (c) {
        case OPT_TRAIN: op.train = optarg; break;
        case OPT_VAL: op.val = optarg; break;
        case OPT_TEST: op.test = optarg; break;
        case OPT_EPOCHS: op.o.epochs = (int)tool_parse_long("--epochs", optarg, 1, 100000); break;
        case OPT_BATCH: op.o.batch = (int)tool_parse_long("--batch", optarg, 2, 65536); break;
        case OPT_LR: op.o.lr = tool_parse_double("--lr", optarg, 1e-300, 1e300); break;
        case OPT_WD: op.o.weight_decay = tool_parse_double("--weight-decay", optarg, 0, 1e6); break;
        case OPT_NO_DECAY: op.o.no_decay_bn_bias = true; break;
        case OPT_SELECT: {
            int k = 0;
            while (k < 3 && strcmp(optarg, SELECT_NAMES[k]) != 0) k++;
            if (k == 3) tool_usage_error("--select: auc, acc or last, not '%s'", optarg);
            op.select = (select_by)k;
            break;
        }
        case OPT_SEED: op.o.seed = (uint64_t)tool_parse_long("--seed", optarg, 0, INT64_MAX); break;
        case OPT_BACKEND: op.backend = optarg; break;
        case OPT_DEVICE:
            if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda")) tool_usage_error("--device: cpu or cuda, not '%s'", optarg);
            op.backend = strcmp(optarg, "cuda") ? "auto" : "cuda";
            break;
        case OPT_RESUME: op.resume = true; break;
        case OPT_MAX_STEPS: op.max_steps = tool_parse_long("--max-steps", optarg, 0, INT64_MAX); break;
        case OPT_NO_AUGMENT: op.o.augment = false; break;
        case OPT_NO_DROPOUT: op.o.dropout = false; break;
        case OPT_CONFIG: op.config = optarg; break;
        case OPT_DATASET: op.dataset = optarg; break;
        case OPT_AMP:
            if (fu_amp_parse(optarg, &op.o.amp) < 0) tool_usage_error("--amp: off, bf16 or fp16, not '%s'", optarg);
            break;
        case OPT_SYNC_BN: op.sync_bn = true; break;
        case OPT_LR_SCALE:
            if (strcmp(optarg, "none") && strcmp(optarg, "linear"))
                tool_usage_error("--lr-scale: none or linear, not '%s'", optarg);
            op.lr_linear = strcmp(optarg, "linear") == 0;
            break;
        case OPT_BUCKET_MB: op.bucket_mb = tool_parse_double("--bucket-mb", optarg, 0.001, 4096); break;
        case OPT_MODEL_PARALLEL:
            op.o.stages = (int)tool_parse_long("--model-parallel", optarg, 1, FU_MAX_STAGES);
            break;
        case OPT_STAGES: op.o.stage_cuts = optarg; break;
        case OPT_MICRO_BATCHES: op.o.micro_batches = (int)tool_parse_long("--micro-batches", optarg, 1, 64); break;
        case OPT_SHARED_GPU: op.o.shared_gpu = true; break;
        case OPT_DEFERRED_BN: op.o.deferred_bn = true; break;
        case OPT_HOST_OPTIMIZER: op.o.host_step = true; break;
        case OPT_CONV_ALGOS: op.o.conv_algos = optarg; break;
        case OPT_LOSS_SCALE: {
            int e;
            double v = tool_parse_double("--loss-scale", optarg, FU_LEAST_LOSS_SCALE, 0x1p64);
            if (frexp(v, &e) != 0.5) tool_usage_error("--loss-scale: a power of two, not '%s'", optarg);
            op.o.loss_scale = (float)v;
            break;
        }
        case OPT_ALLREDUCE:
            if (strcmp(optarg, "nccl") && strcmp(optarg, "mpi"))
                tool_usage_error("--allreduce: nccl or mpi, not '%s'", optarg);
            op.o.mpi_allreduce = strcmp(optarg, "mpi") == 0;
            break;
        }
    }
    if (optind < argc) tool_usage_error("%s: unexpected argument (the splits go with --train/--val/--test)", argv[optind]);
    op.out = tool.out_path;
    if (!op.train || !op.val || !op.out) tool_usage_error("--train, --val and --out are required");
    if (strcmp(op.backend, "ref") && strcmp(op.backend, "cpu") && strcmp(op.backend, "cuda") &&
        strcmp(op.backend, "auto"))
        tool_usage_error("--backend: ref, cpu, cuda or auto, not '%s'", op.backend);
    if (op.o.conv_algos && strcmp(op.backend, "cuda"))
        tool_usage_error("--conv-algos chooses cuDNN's algorithms: it needs --device cuda");
    if (op.o.loss_scale && op.o.amp != FU_AMP_FP16)
        tool_usage_error("--loss-scale scales fp16's loss: it needs --amp fp16");
    if (op.o.stage_cuts && op.o.stages < 2) tool_usage_error("--stages needs --model-parallel K (K >= 2)");
    if (op.o.micro_batches > op.o.batch / 2)
        tool_usage_error("--micro-batches %d: a batch of %d makes at most %d micro-batches of 2 images (BatchNorm "
                         "needs two)", op.o.micro_batches, op.o.batch, op.o.batch / 2);
    if (op.sync_bn && (op.o.stages > 1 || op.o.micro_batches > 1))
        tool_usage_error("--sync-bn cannot go with --model-parallel or --micro-batches (not supported)");
    return op;
}

// ---- data -------------------------------------------------------------------

static void open_split(fu_dataset *d, const char *path, const char *split, const fu_dataset *like) {
    if (fu_dataset_open(d, path, 2) < 0) tool_fail();
    if (like && (d->width != like->width || d->height != like->height))
        tool_die("%s: the %s images are %ux%u, the train images %ux%u: every split needs one size", path, split,
                 d->width, d->height, like->width, like->height);
}

// A split with one class: AUC is undefined there.
static bool single_class(const fu_dataset *d) { return fu_dataset_classes_present(d) < 2; }

// ---- text outputs -------------------------------------------------------------

typedef struct {
    char *s;
    size_t n;
    FILE *f;
} text;

static void text_open(text *t) {
    t->s = NULL, t->n = 0;
    t->f = open_memstream(&t->s, &t->n);
    if (!t->f) tool_die("out of memory");
}

// Closes the text and writes it to DIR/name atomically.
static void text_commit(text *t, const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fclose(t->f);
    int rc = fu_write_file_atomic(path, t->s, t->n);
    free(t->s);
    if (rc < 0) tool_fail();
}

// A number, or nothing when undefined (AUC of a single-class split).
static void put_num(FILE *f, const char *fmt, double v) {
    if (isfinite(v)) fprintf(f, fmt, v);
}

static void write_predictions(const char *dir, const char *name, const fu_dataset *d, const fu_eval *e) {
    text t;
    text_open(&t);
    fputs("id,label,p_glaucoma,prediction\n", t.f);
    for (size_t i = 0; i < d->n; i++) {
        fu_csv_put(t.f, d->ids[i], strlen(d->ids[i]));
        fprintf(t.f, ",%d,%.9g,%d\n", d->labels[i], e->p1[i], e->pred[i]);
    }
    text_commit(&t, dir, name);
}

static const char LOG_HEADER[] = "epoch,lr,train_loss,train_acc,val_loss,val_acc,val_auc,epoch_seconds,"
                                 "images_per_second,data_wait_seconds\n";

static void write_log(const char *dir, const char *rows) {
    text t;
    text_open(&t);
    fputs(LOG_HEADER, t.f);
    fputs(rows, t.f);
    text_commit(&t, dir, "log.csv");
}

static char *append(char *s, const char *add) {
    size_t a = strlen(s), b = strlen(add);
    char *r = realloc(s, a + b + 1);
    if (!r) tool_die("out of memory");
    memcpy(r + a, add, b + 1);
    return r;
}

// The revision of the checkout this binary was built in (bin/..), else of
// the current folder.
static void git_rev(char *out, size_t n) {
    snprintf(out, n, "unknown");
    char exe[4096], cmd[4400] = "git rev-parse --short HEAD 2>/dev/null";
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[len > 0 ? len : 0] = 0;
    char *slash = strrchr(exe, '/');
    if (slash && !strchr(exe, '\'')) {
        *slash = 0;
        snprintf(cmd, sizeof cmd, "git -C '%s/..' rev-parse --short HEAD 2>/dev/null || git rev-parse --short HEAD 2>/dev/null", exe);
    }
    FILE *p = popen(cmd, "r");
    if (!p) return;
    char line[64];
    if (fgets(line, sizeof line, p) && line[0] && line[0] != '\n') snprintf(out, n, "%.*s", (int)strcspn(line, "\n"), line);
    pclose(p);
}

static double peak_rss_mb(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_maxrss / 1024.0;
}

typedef struct {
    const options *op;
    const fu_dataset *train;
    const fu_run_state *rs;
    const fu_eval *val, *test;
    const char *device_name, *started_at;
    double final_train_loss, peak_rss_mb;
    double peak_gpu_mb; // device memory the backend planned (0 on the CPU)
    int ranks;
    int64_t steps, skipped; // training steps; of which skipped (fp16: a gradient overflowed)
    fu_grad_sync_stats sync;
    double allreduce_full; // one blocking allreduce of every gradient, seconds
    const char *stage_busy; // per stage, seconds: "12.3;11.9"
} results;

static void write_results(const results *r) {
    const options *op = r->op;
    char rev[64], config[128], dataset[256];
    git_rev(rev, sizeof rev);
    // As DESIGN.md §6 names runs: cpu1 = one process, one thread; cpu1t2 = two
    // threads; cpux4 = 4 ranks of one thread; cpux4t2 = 4 ranks of 2 threads.
    // K model-parallel stages add _mpK.
    int stages = op->o.stages > 1 ? op->o.stages : 1;
    char mp[16] = "";
    if (stages > 1) snprintf(mp, sizeof mp, "_mp%d", stages);
    if (op->config) snprintf(config, sizeof config, "%s", op->config);
    else if (r->ranks == 1 && tool.threads == 1) snprintf(config, sizeof config, "cpu1%s", mp);
    else if (r->ranks == 1) snprintf(config, sizeof config, "cpu1t%d%s", tool.threads, mp);
    else if (tool.threads == 1) snprintf(config, sizeof config, "cpux%d%s", r->ranks, mp);
    else snprintf(config, sizeof config, "cpux%dt%d%s", r->ranks, tool.threads, mp);
    if (op->dataset) snprintf(dataset, sizeof dataset, "%s", op->dataset);
    else {
        const char *base = strrchr(op->train, '/') ? strrchr(op->train, '/') + 1 : op->train;
        snprintf(dataset, sizeof dataset, "%.*s", (int)strcspn(base, "."), base);
    }
    text t;
    text_open(&t);
    fputs("config,dataset,device,device_name,ranks,threads_per_rank,amp,model_parallel,batch_per_rank,epochs,"
          "image_size,train_images,train_seconds,images_per_second,data_wait_seconds,final_train_loss,val_acc,"
          "val_auc,test_acc,test_auc,test_sensitivity,test_specificity,test_f1,peak_rss_mb,peak_gpu_mb,git_rev,"
          "started_at,sync_bn,steps,compute_seconds,allreduce_seconds,allreduce_exposed_seconds,"
          "allreduce_full_seconds,grad_mb,micro_batches,stage_busy_seconds,gpus_per_rank,steps_skipped\n",
          t.f);
    fu_csv_put(t.f, config, strlen(config));
    fputc(',', t.f);
    fu_csv_put(t.f, dataset, strlen(dataset));
    fprintf(t.f, ",%s,", strcmp(op->backend, "cuda") ? "cpu" : "cuda");
    fu_csv_put(t.f, r->device_name, strlen(r->device_name));
    const fu_run_state *rs = r->rs;
    char size[32];
    if (r->train->width == r->train->height) snprintf(size, sizeof size, "%u", r->train->width);
    else snprintf(size, sizeof size, "%ux%u", r->train->height, r->train->width);
    fprintf(t.f, ",%d,%d,%s,%d,%d,%d,%s,%zu,%.3f,", r->ranks, tool.threads,
            op->o.amp == FU_AMP_OFF ? "fp32" : fu_amp_name(op->o.amp), stages, op->o.batch, op->o.epochs, size, r->train->n,
            rs->train_seconds);
    put_num(t.f, "%.3f", rs->train_seconds > 0 ? (double)rs->images / rs->train_seconds : NAN);
    fprintf(t.f, ",%.3f,%.6f,%.6f,", rs->wait_seconds, r->final_train_loss, r->val->acc);
    put_num(t.f, "%.6f", r->val->auc);
    fputc(',', t.f);
    if (r->test) {
        fprintf(t.f, "%.6f,", r->test->acc);
        put_num(t.f, "%.6f", r->test->auc);
        fputc(',', t.f);
        put_num(t.f, "%.6f", r->test->sensitivity);
        fputc(',', t.f);
        put_num(t.f, "%.6f", r->test->specificity);
        fprintf(t.f, ",%.6f", r->test->f1);
    } else {
        fputs(",,,,", t.f);
    }
    fprintf(t.f, ",%.1f,", r->peak_rss_mb);
    if (r->peak_gpu_mb > 0) fprintf(t.f, "%.1f", r->peak_gpu_mb);
    else fputc('0', t.f);
    fprintf(t.f, ",%s,%s", rev, r->started_at);
    // Where the time went (per rank): compute = training less waiting for
    // data and for the part of the allreduce backward did not hide.
    const fu_grad_sync_stats *g = &r->sync;
    // GPUs: one per rank, or one per stage unless the stages share it.
    int gpus = strcmp(op->backend, "cuda") ? 0 : op->o.shared_gpu ? 1 : stages;
    fprintf(t.f, ",%s,%" PRId64 ",%.3f,%.3f,%.3f,%.6f,%.3f,%d,%s,%d,%" PRId64 "\n",
            op->sync_bn && r->ranks > 1 ? "yes" : "no", r->steps, rs->train_seconds - rs->wait_seconds - g->exposed,
            g->seconds, g->exposed, r->allreduce_full, r->ranks > 1 ? g->mb_per_step : 0.0,
            op->o.micro_batches > 1 ? op->o.micro_batches : 1, r->stage_busy, gpus, r->skipped);
    text_commit(&t, op->out, "results.csv");
}

// ---- progress on a terminal --------------------------------------------------

typedef struct {
    bool on;
    int epochs;
    double last;
} progress;

static void show_step(void *ctx, const fu_epoch_stats *st, int batches, float loss) {
    progress *p = ctx;
    double now = fu_now();
    if (!p->on || (now - p->last < 0.2 && st->next_batch < batches)) return;
    p->last = now;
    double rate = st->seconds > 0 ? (double)st->seen / st->seconds : 0;
    double per_batch = st->next_batch ? st->seconds / st->next_batch : 0;
    double eta = per_batch * ((double)(batches - st->next_batch) + (double)batches * (p->epochs - st->epoch - 1));
    // On the GPU the loss comes back every few steps (fu_train_epoch): "-" before the first.
    char l[32] = "-";
    if (isfinite(loss)) snprintf(l, sizeof l, "%.4f", loss);
    fprintf(stderr, "\rcnn-train: epoch %d/%d  step %d/%d  loss %s  %.1f img/s  ETA %dm%02ds ", st->epoch + 1,
            p->epochs, st->next_batch, batches, l, rate, (int)(eta / 60), (int)eta % 60);
    fflush(stderr);
}

// ---- the run ----------------------------------------------------------------------

static void start_up_report(const options *op, const fu_model *m, const fu_trainer *t, const fu_dataset *train,
                            const fu_dataset *val, const fu_dataset *test, int batches, bool dropped) {
    fu_model_summary s = fu_model_summarize(m);
    double mib = 1.0 / (1 << 20);
    tool_note("MedicalCNN %dx%d: %zu parameters in %d tensors; %d conv, %d BN, %d linear modules (the study counts "
         "\"%d layers\"); %.2f GMAC per image",
         m->height, m->width, s.params, s.tensors, s.convs, s.bns, s.linears, s.study_layers, s.macs / 1e9);
    tool_note("memory: params %.1f MiB, grads %.1f MiB, AdamW moments %.1f MiB, best copy %.1f MiB, activations "
         "%.1f MiB, of which their gradients %.1f MiB (%s backend, batch %d)",
         (double)m->n_params * 4 * mib, (double)m->n_params * 4 * mib, (double)m->n_params * 8 * mib,
         (double)m->n_params * 4 * mib, (double)t->be->act_bytes * mib, (double)t->be->grad_bytes * mib,
         t->be->name, op->o.batch);
    if (t->be->device_bytes)
        tool_note("GPU memory: %.0f MiB planned (all of it allocated now; the convolution workspace grows only for a "
                  "batch size not seen yet); %s", (double)t->be->device_bytes * mib,
                  t->resident ? "weights, gradients, BN state and AdamW moments live there, and the optimizer step "
                                "runs there"
                              : "the optimizer step runs on the host");
    if (t->be->conv_note)
        tool_note("convolutions: %s%s%s", t->be->conv_note, op->o.conv_algos ? " in " : "",
                  op->o.conv_algos ? op->o.conv_algos : "");
    tool_note("data: train %zu images (%zu class 0, %zu class 1; loss weights %.4f, %.4f), val %zu, test %zu; %d "
         "batches per epoch",
         train->n, train->count[0], train->count[1], t->class_w[0], t->class_w[1], val->n, test ? test->n : 0,
         batches);
    if (dropped) tool_note("the last batch of every epoch would hold 1 image; it is dropped (BatchNorm needs 2)");
    fu_pipe_stage_info info[FU_MAX_STAGES];
    int k = fu_pipe_info(t->be, info, FU_MAX_STAGES);
    if (!k) return;
    char stages[1024] = "";
    for (int i = 0, at = 0; i < k && at < (int)sizeof stages; i++) {
        char where[32] = "";
        if (info[i].device >= 0) snprintf(where, sizeof where, " on GPU %d", info[i].device);
        at += snprintf(stages + at, sizeof stages - (size_t)at, "%s%d: %s%s, %.0f%% of the MACs, %.1f M parameters",
                       i ? "; " : "", i, info[i].stage.name, where, 100 * info[i].stage.macs / s.macs,
                       (double)info[i].stage.n_params / 1e6);
    }
    int micro = op->o.micro_batches > 1 ? op->o.micro_batches : 1;
    tool_note("model parallel: %d stage%s, %d micro-batch%s of %d images per batch: %s", k, k == 1 ? "" : "s", micro,
              micro == 1 ? "" : "es", (op->o.batch + micro - 1) / micro, stages);
}

// Each stage's busy seconds in training (evaluation excluded): what
// fu_pipe_info's counters gained during fu_train_epoch calls.
typedef struct {
    int k;
    double before[FU_MAX_STAGES], train[FU_MAX_STAGES];
} stage_clock;

static void stage_clock_mark(stage_clock *c, const fu_backend *b, bool start) {
    fu_pipe_stage_info info[FU_MAX_STAGES];
    c->k = fu_pipe_info(b, info, FU_MAX_STAGES);
    for (int i = 0; i < c->k; i++) {
        if (!start) c->train[i] += info[i].busy_seconds - c->before[i];
        c->before[i] = info[i].busy_seconds;
    }
}

// "12.300;11.950" (empty when not split).
static void stage_clock_format(const stage_clock *c, char *out, size_t size) {
    out[0] = '\0';
    for (int i = 0, at = 0; i < c->k && at < (int)size; i++)
        at += snprintf(out + at, size - (size_t)at, "%s%.3f", i ? ";" : "", c->train[i]);
}

// train_loss (the third field) of the last row of the log.
static double last_train_loss(const char *log) {
    const char *row = log;
    for (const char *p = log; *p; p++)
        if (*p == '\n' && p[1]) row = p + 1;
    for (int field = 0; field < 2 && row; field++) row = strchr(row, ',') ? strchr(row, ',') + 1 : NULL;
    return row && *row ? strtod(row, NULL) : NAN;
}

static double score_of(select_by by, const fu_eval *e) {
    return by == SELECT_AUC ? e->auc : by == SELECT_ACC ? e->acc : 0;
}

// ---- data parallel --------------------------------------------------------------

static fu_comm comm;
static bool setting_up = true; // before the ranks' first collective together

// A failure while setting up: every rank meets the same check on the same
// inputs, so they agree (one collective, which the ranks that did not fail
// reach at the end of set-up) and only the lowest failing rank prints.
// Later failures are a rank's own: it prints, exits, and the launcher ends
// the job.
static bool report_fatal(void) {
    if (!comm.mpi || !setting_up) return true;
    int first = fu_comm_first_failure(&comm, false), me = comm.rank;
    fu_comm_finalize(&comm);
    return first == me;
}

static void join_job(int *argc, char ***argv) {
    if (fu_comm_init(&comm, argc, argv) < 0) tool_fail();
    if (comm.size < 2) return;
    tool.before_fatal = report_fatal;
    static char name[64];
    if (comm.rank > 0) {
        snprintf(name, sizeof name, "%s (rank %d)", tool.name, comm.rank);
        tool.name = name;
    }
}

// End of set-up: stop together when any rank failed.
static void setup_done(void) {
    if (!comm.mpi) return;
    int first = fu_comm_first_failure(&comm, true);
    setting_up = false;
    if (first >= 0) {
        fu_comm_finalize(&comm);
        exit(1);
    }
}

static double max_over_ranks(double v) {
    if (!comm.mpi) return v;
    double *all = malloc((size_t)comm.size * sizeof *all);
    int *counts = malloc((size_t)comm.size * sizeof *counts);
    if (all && counts && fu_comm_allgather(&comm, &v, 1, all, counts) == 0)
        for (int r = 0; r < comm.size; r++) v = all[r] > v ? all[r] : v;
    free(all), free(counts);
    return v;
}

// fp16's dynamic loss scaling in the epoch's line: the scale (every rank's:
// they agree on every overflow), and the steps skipped since
// *skipped_before because a gradient overflowed (the same on every rank:
// the summed gradients' norm says).
// Empty without fp16.
static void loss_scaling_note(const fu_trainer *t, int64_t *skipped_before, char *out, size_t size) {
    float scale = fu_trainer_loss_scale(t);
    if (isnan(scale)) return;
    int64_t now = t->skipped - *skipped_before;
    if (now == 0) snprintf(out, size, "; fp16 loss scale %g, no step skipped", scale);
    else
        snprintf(out, size, "; fp16 loss scale %g, %" PRId64 " step%s skipped (a gradient overflowed)", scale, now,
                 now == 1 ? "" : "s");
    *skipped_before = t->skipped;
}

int main(int argc, char **argv) {
    tool_init("cnn-train", USAGE);
    join_job(&argc, &argv);
    options op = parse(argc, argv);
    bool writer = comm.rank == 0; // rank 0 alone writes the run's folder
    // Ranks sharing a host share its cores: by default each takes its part,
    // not all of them (N ranks x all cores threads would oversubscribe N times).
    if (!tool.threads_given && comm.local_size > 1)
        tool.threads = tool.threads / comm.local_size > 1 ? tool.threads / comm.local_size : 1;
    if (!writer) tool.quiet = true;
    if (op.lr_linear) op.o.lr *= comm.size;
    char started_at[32];
    time_t now = time(NULL);
    strftime(started_at, sizeof started_at, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));

    fu_dataset train, val, test;
    open_split(&train, op.train, "train", NULL);
    open_split(&val, op.val, "val", &train);
    if (op.test) open_split(&test, op.test, "test", &train);
    if (single_class(&train))
        tool_die("%s: every train image has label %d: the classifier needs both classes", op.train,
                 train.labels[0]);
    if (single_class(&val) && op.select == SELECT_AUC) {
        fu_fail(op.val, "every val image has label %d: ROC AUC is undefined, so it cannot select the epoch",
                val.labels[0]);
        fu_hint("use --select acc (or last), or a stratified split (shard-split)");
        tool_fail();
    }

    fu_model m;
    if (fu_medicalcnn(&m, (int)train.height, (int)train.width) < 0) tool_fail();

    // The run's folder: a new run must not mix its files with another's.
    char path[4096];
    snprintf(path, sizeof path, "%s/state.safetensors", op.out);
    if (writer) {
        if (fu_make_dirs(op.out, NULL, NULL) < 0) tool_fail();
        if (!op.resume && access(path, F_OK) == 0) {
            fu_fail(op.out, "holds a run already");
            fu_hint("--resume continues it; or choose another --out");
            tool_fail();
        }
        if (access(op.out, W_OK) != 0) tool_die("%s: cannot write there", op.out);
    }

    fu_trainer t;
    op.o.device = comm.local_rank; // one GPU per rank of a host (cuda backend)
    // A GPU computes the step: the host's threads make the batches instead.
    op.o.load_threads = strcmp(op.backend, "cuda") == 0 ? tool.threads : 1;
    if (fu_trainer_init(&t, &m, &op.o, op.backend, tool.threads) < 0) tool_fail();
    if (fu_class_weights(train.count, 2, t.class_w) < 0) tool_fail();
    bool dropped;
    int batches = fu_epoch_batches(fu_rank_share(train.n, comm.size), op.o.batch, &dropped);
    if (batches < 1)
        tool_die("%s: %zu image(s) for %d rank(s) is too few to train on (BatchNorm needs 2 per rank)", op.train,
                 train.n, comm.size);

    // What a resumed run must share with the one it continues.
    char size[32], batch[16], epochs[16], lr[64], wd[64], seed[32], n_train[32], n_val[32];
    snprintf(size, sizeof size, "%ux%u", train.height, train.width);
    snprintf(batch, sizeof batch, "%d", op.o.batch);
    snprintf(epochs, sizeof epochs, "%d", op.o.epochs);
    snprintf(lr, sizeof lr, "%a", op.o.lr);
    snprintf(wd, sizeof wd, "%a", op.o.weight_decay);
    snprintf(seed, sizeof seed, "%" PRIu64, op.o.seed);
    snprintf(n_train, sizeof n_train, "%zu", train.n);
    snprintf(n_val, sizeof n_val, "%zu", val.n);
    char ranks[16], micro[16];
    snprintf(ranks, sizeof ranks, "%d", comm.size);
    snprintf(micro, sizeof micro, "%d", op.o.micro_batches > 1 ? op.o.micro_batches : 1);
    const char *settings[] = {"image_size", size, "batch", batch, "epochs", epochs, "lr", lr, "weight_decay", wd,
                              "no_decay_bn_bias", op.o.no_decay_bn_bias ? "yes" : "no", "seed", seed,
                              "augment", op.o.augment ? "yes" : "no", "dropout", op.o.dropout ? "yes" : "no",
                              "select", SELECT_NAMES[op.select], "train_images", n_train, "val_images", n_val,
                              "ranks", ranks, "sync_bn", op.sync_bn ? "yes" : "no", "amp", fu_amp_name(op.o.amp),
                              "micro_batches", micro, "deferred_bn", op.o.deferred_bn ? "yes" : "no", NULL};

    fu_run_state rs = {.best_epoch = -1, .log = strdup("")};
    if (!rs.log) tool_die("out of memory");
    // Every rank reads the checkpoint: with ranks on several hosts, DIR must
    // be on a file system they share.
    if (op.resume && fu_checkpoint_load(op.out, &t, &rs, settings) < 0) tool_fail();
    setup_done();
    if (fu_trainer_distribute(&t, &comm, op.sync_bn, (size_t)(op.bucket_mb * 1e6)) < 0) tool_fail();
    double allreduce_full = 0;
    if (fu_trainer_allreduce_calibrate(&t, 3, &allreduce_full) < 0) tool_fail();

    start_up_report(&op, &m, &t, &train, &val, op.test ? &test : NULL, batches, dropped);
    if (comm.size > 1) {
        bool nccl = strcmp(fu_trainer_allreduce_name(&t), "NCCL") == 0;
        tool_note("data parallel: %d ranks of %d thread%s, batch %d per rank (%d global), lr %g; BatchNorm %s; "
                  "gradients %.1f MB in %d buckets summed by %s, one blocking allreduce of them %.1f ms",
                  comm.size, tool.threads, tool.threads == 1 ? "" : "s", op.o.batch, op.o.batch * comm.size, op.o.lr,
                  op.sync_bn ? "synchronised across ranks" : "per rank", (double)m.n_params * 4 / 1e6,
                  fu_trainer_allreduce_stats(&t).buckets,
                  nccl ? "NCCL on the GPUs" : "MPI through host memory", allreduce_full * 1e3);
    }
    if (single_class(&val)) tool_note("%s: a single class: val AUC is undefined (left empty); accuracy is reported", op.val);
    if (op.test && single_class(&test))
        tool_note("%s: a single class: test AUC is undefined (left empty); accuracy is reported", op.test);
    if (op.resume) tool_note("resuming at epoch %d, batch %d (step %" PRId64 ")", rs.st.epoch + 1, rs.st.next_batch, t.step);

    progress pr = {.on = !tool.quiet && isatty(STDERR_FILENO), .epochs = op.o.epochs};
    stage_clock clock = {0};
    int64_t skipped_before = t.skipped; // resumed: counted from the checkpoint's
    while (rs.st.epoch < op.o.epochs) {
        double lr_now = fu_cosine_lr(op.o.lr, FU_COSINE_ETA_MIN, op.o.epochs, rs.st.epoch);
        stage_clock_mark(&clock, t.be, true);
        int rc = fu_train_epoch(&t, &train, lr_now, op.max_steps, &rs.st, show_step, &pr);
        stage_clock_mark(&clock, t.be, false);
        if (pr.on) fputc('\n', stderr);
        if (rc < 0) {
            fprintf(stderr, "%s: %s\n", tool.name, fu_error());
            if (rs.best_epoch >= 0 || rs.st.epoch > 0)
                fprintf(stderr, "%s: hint: %s keeps the state after epoch %d; model.safetensors the selected epoch\n",
                        tool.name, op.out, rs.st.epoch);
            exit(1);
        }
        if (rc == 1) {
            if (writer && fu_checkpoint_save(op.out, &t, &rs, settings) < 0) tool_fail();
            tool_note("stopped after step %" PRId64 " (--max-steps), in epoch %d; --resume continues", t.step,
                 rs.st.epoch + 1);
            fu_comm_finalize(&comm);
            return 0;
        }
        double t0 = fu_now();
        fu_eval ev;
        if (fu_evaluate(&t, &val, t.params, t.state, &ev) < 0) tool_fail();
        double val_seconds = fu_now() - t0;
        double score = score_of(op.select, &ev);
        bool better = rs.best_epoch < 0 || op.select == SELECT_LAST || score > rs.best_score;
        if (better) {
            rs.best_epoch = rs.st.epoch;
            rs.best_score = score;
            if (fu_trainer_keep_best(&t) < 0) tool_fail();
            char ep[16];
            snprintf(ep, sizeof ep, "%d", rs.st.epoch + 1);
            const char *meta[] = {"epoch", ep, "selected_by", SELECT_NAMES[op.select], NULL};
            snprintf(path, sizeof path, "%s/model.safetensors", op.out);
            if (writer && fu_model_save(path, &m, t.best_params, t.best_state, t.best_counts, meta) < 0) tool_fail();
        }
        const fu_epoch_stats *st = &rs.st;
        char row[512];
        char auc[32] = "";
        if (isfinite(ev.auc)) snprintf(auc, sizeof auc, "%.6f", ev.auc);
        snprintf(row, sizeof row, "%d,%.9g,%.6f,%.6f,%.6f,%.6f,%s,%.3f,%.3f,%.3f\n", st->epoch + 1, lr_now,
                 st->loss_sum / (double)st->seen, (double)st->correct / (double)st->seen, ev.loss, ev.acc, auc,
                 st->seconds + val_seconds, st->seconds > 0 ? (double)st->seen / st->seconds : 0.0,
                 st->wait + ev.wait);
        rs.log = append(rs.log, row);
        rs.train_seconds += st->seconds;
        rs.wait_seconds += st->wait;
        rs.images += st->seen;
        char scaling[128] = "";
        loss_scaling_note(&t, &skipped_before, scaling, sizeof scaling);
        tool_note("epoch %d/%d: train loss %.4f acc %.4f, val loss %.4f acc %.4f auc %s%s%s", st->epoch + 1,
                  op.o.epochs, st->loss_sum / (double)st->seen, (double)st->correct / (double)st->seen, ev.loss,
                  ev.acc, auc[0] ? auc : "undefined", better ? " (kept)" : "", scaling);
        fu_eval_free(&ev);
        rs.st = (fu_epoch_stats){.epoch = rs.st.epoch + 1};
        if (writer) write_log(op.out, rs.log);
        if (writer && fu_checkpoint_save(op.out, &t, &rs, settings) < 0) tool_fail();
    }

    // The selected weights on the whole validation and test splits.
    fu_eval ev, et;
    if (fu_evaluate(&t, &val, t.best_params, t.best_state, &ev) < 0) tool_fail();
    if (writer) write_predictions(op.out, "predictions-val.csv", &val, &ev);
    if (op.test) {
        if (fu_evaluate(&t, &test, t.best_params, t.best_state, &et) < 0) tool_fail();
        if (writer) write_predictions(op.out, "predictions-test.csv", &test, &et);
        tool_note("test (epoch %d's weights): acc %.4f, auc %.4f", rs.best_epoch + 1, et.acc, et.auc);
    }
    double final_loss = last_train_loss(rs.log);
    char device_name[256], busy[512];
    fu_backend_device_name(t.be, device_name, sizeof device_name);
    stage_clock_format(&clock, busy, sizeof busy);
    if (busy[0])
        tool_note("model parallel: each stage computed %s s of the %.1f s training took%s", busy, rs.train_seconds,
                  op.resume ? " (since the resume)" : "");
    results r = {&op, &train, &rs, &ev, op.test ? &et : NULL, device_name, started_at, final_loss,
                 max_over_ranks(peak_rss_mb()), max_over_ranks((double)t.be->device_bytes / (1 << 20)), comm.size,
                 t.step, t.skipped, fu_trainer_allreduce_stats(&t), allreduce_full, busy};
    if (writer) write_results(&r);

    fu_eval_free(&ev);
    if (op.test) fu_eval_free(&et), fu_dataset_close(&test);
    free(rs.log);
    fu_trainer_free(&t);
    fu_model_free(&m);
    fu_dataset_close(&train);
    fu_dataset_close(&val);
    fu_comm_finalize(&comm);
    return 0;
}
