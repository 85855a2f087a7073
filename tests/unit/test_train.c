// The trainer's pieces: AdamW against hand-computed values, decay groups,
// gradient clipping, the cosine schedule, class weights, epoch orders and
// batches, the online augmentation, the loader's checks and ROC AUC.
#include "check.h"
#include "core/error.h"
#include "metrics/auc.h"
#include "nn/adamw.h"
#include "nn/loader.h"
#include "nn/schedule.h"
#include "nn/trainer.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// torch.optim.AdamW's single-tensor step, written out in double.
static double adamw_ref(double p, double g, double *m, double *v, int t, double lr, double wd) {
    p *= 1 - lr * wd;
    *m = 0.9 * *m + 0.1 * g;
    *v = 0.999 * *v + 0.001 * g * g;
    double b1 = 1 - pow(0.9, t), b2 = 1 - pow(0.999, t);
    return p - lr / b1 * (*m / (sqrt(*v) / sqrt(b2) + 1e-8));
}

static void check_adamw(void) {
    fu_adamw_opts o = fu_adamw_defaults();
    o.weight_decay = 0.01;
    fu_param_group groups[2] = {{0, 1, true}, {1, 1, false}};
    float p[2] = {1.0f, 1.0f}, m1[2] = {0}, m2[2] = {0};
    const float grads[3][2] = {{0.5f, 0.5f}, {-0.25f, -0.25f}, {2.0f, 2.0f}};
    double rp[2] = {1, 1}, rm[2] = {0}, rv[2] = {0};
    double worst = 0;
    for (int t = 1; t <= 3; t++) {
        fu_adamw_step(&o, 0.1, t, groups, 2, p, grads[t - 1], m1, m2);
        for (int i = 0; i < 2; i++) {
            rp[i] = adamw_ref(rp[i], grads[t - 1][i], &rm[i], &rv[i], t, 0.1, i == 0 ? 0.01 : 0);
            worst = fmax(worst, fabs(p[i] - rp[i]));
        }
    }
    CHECK(worst < 1e-6, "AdamW: three steps as torch.optim.AdamW",
          "max difference %.3g (ours %.9f %.9f, reference %.9f %.9f)", worst, p[0], p[1], rp[0], rp[1]);
    float q[1] = {1.0f}, a[1] = {0}, b[1] = {0}, g1[1] = {0.5f};
    fu_param_group one = {0, 1, true};
    // By hand: p = 1 (1 - 0.1 x 0.01) - 0.1 / (1 - 0.9) x (0.05 / (sqrt(0.00025 / 0.001) + 1e-8)) = 0.899.
    fu_adamw_step(&o, 0.1, 1, &one, 1, q, g1, a, b);
    CHECK(fabs(q[0] - 0.899) < 1e-6, "AdamW: first step by hand (decay, then a bias-corrected sign step)",
          "%.9f, want 0.899", q[0]);
    CHECK(p[1] > p[0], "AdamW: a group without decay is not decayed", "%.9f vs %.9f", p[1], p[0]);
}

static const fu_param_group *group_of(const fu_model *m, const fu_param_group *g, int n, const char *name) {
    const fu_tensor *t = fu_model_find(m, name);
    for (int i = 0; t && i < n; i++)
        if (g[i].offset == t->offset) return &g[i];
    return NULL;
}

static void check_groups(const fu_model *m) {
    fu_param_group *all, *some;
    int na = fu_param_groups(m, false, &all), ns = fu_param_groups(m, true, &some);
    size_t decayed = 0, total = 0;
    int all_decay = 1;
    for (int i = 0; i < na; i++) all_decay &= all[i].decay, total += all[i].count;
    for (int i = 0; i < ns; i++) decayed += some[i].decay ? some[i].count : 0;
    CHECK(na == ns && total == m->n_params && all_decay, "decay groups: every parameter, all decayed by default",
          "%d groups, %zu of %zu parameters", na, total, m->n_params);
    const char *exempt[] = {"stem.1.weight", "stem.1.bias", "fc.0.bias", "fc.1.weight", "fc.8.bias",
                            "stage3_md.conv_fusion.bn.bias"};
    const char *decay[] = {"stem.0.weight", "fc.0.weight", "stage1.0.se.fc.0.weight", "fc.8.weight"};
    int ok = 1;
    for (size_t i = 0; i < sizeof exempt / sizeof *exempt; i++) {
        const fu_param_group *g = group_of(m, some, ns, exempt[i]);
        ok &= g && !g->decay;
    }
    for (size_t i = 0; i < sizeof decay / sizeof *decay; i++) {
        const fu_param_group *g = group_of(m, some, ns, decay[i]);
        ok &= g && g->decay;
    }
    // Decayed: conv weights and Linear weights only.
    size_t want = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const fu_tensor *t = &m->tensors[i];
        if (t->buffer == FU_BUF_PARAMS && t->ndim >= 2) want += t->numel;
    }
    CHECK(ok && decayed == want, "--no-decay-bn-bias: BN weights/biases and Linear biases exempt",
          "%zu decayed, want %zu", decayed, want);
    free(all), free(some);
}

static void check_clipping(void) {
    float g[2] = {3, 4};
    double norm = fu_clip_grad_norm(g, 2, 1.0);
    CHECK(norm == 5 && fabsf(g[0] - 0.6f) < 1e-6f && fabsf(g[1] - 0.8f) < 1e-6f,
          "clipping: scaled by max_norm / (norm + 1e-6)", "norm %g, g %.8f %.8f", norm, g[0], g[1]);
    float h[2] = {0.3f, 0.4f};
    CHECK(fabs(fu_clip_grad_norm(h, 2, 1.0) - 0.5) < 1e-7 && h[0] == 0.3f && h[1] == 0.4f,
          "clipping: a norm under the limit leaves the gradients", "%g %g", h[0], h[1]);
    size_t n = 1000003;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    for (size_t i = 0; i < n; i++) a[i] = b[i] = (float)sin((double)i) * 0.01f;
    omp_set_num_threads(1);
    double n1 = fu_clip_grad_norm(a, n, 1.0);
    omp_set_num_threads(2);
    double n2 = fu_clip_grad_norm(b, n, 1.0);
    CHECK(n1 == n2 && memcmp(a, b, n * sizeof *a) == 0 && n1 > 1, "clipping: same bits for 1 and 2 threads",
          "%.17g vs %.17g", n1, n2);
    free(a), free(b);
}

static void check_schedule(void) {
    double e1 = fu_cosine_lr(1e-3, 1e-6, 10, 1), e7 = fu_cosine_lr(1e-3, 1e-6, 10, 7);
    CHECK(fu_cosine_lr(1e-3, 1e-6, 10, 0) == 1e-3 && fabs(e1 - 0.0009755527298894294) < 1e-15 &&
              fabs(e7 - 0.00020690126647990973) < 1e-15 && fabs(fu_cosine_lr(1e-3, 1e-6, 10, 10) - 1e-6) < 1e-15,
          "cosine annealing: CosineAnnealingLR's closed form (T_max 10, eta_min 1e-6)", "%.17g %.17g", e1, e7);
}

static void check_class_weights(void) {
    size_t counts[2] = {30, 10}, one[2] = {12, 0};
    float w[2];
    int rc = fu_class_weights(counts, 2, w);
    CHECK(rc == 0 && fabsf(w[0] - 0.25f) < 1e-7f && fabsf(w[1] - 0.75f) < 1e-7f,
          "class weights: inverse frequency, summing to 1", "%g %g", w[0], w[1]);
    CHECK(fu_class_weights(one, 2, w) < 0 && strstr(fu_error(), "class 1"), "class weights: a missing class refused",
          "%s", fu_error());
}

static void check_order(void) {
    enum { N = 101 };
    uint32_t a[N], b[N], c[N];
    fu_epoch_order(42, 3, N, a);
    fu_epoch_order(42, 3, N, b);
    fu_epoch_order(42, 4, N, c);
    int seen[N] = {0}, complete = 1;
    for (int i = 0; i < N; i++) seen[a[i]]++;
    for (int i = 0; i < N; i++) complete &= seen[i] == 1;
    CHECK(memcmp(a, b, sizeof a) == 0 && memcmp(a, c, sizeof a) != 0 && complete,
          "epoch order: a permutation, the same for (seed, epoch), another for the next epoch", "%u %u", a[0], c[0]);
    bool dropped;
    int b9 = fu_epoch_batches(9, 4, &dropped);
    bool d9 = dropped;
    int b10 = fu_epoch_batches(10, 4, &dropped);
    CHECK(b9 == 2 && d9 && b10 == 3 && !dropped && fu_epoch_batches(8, 4, &dropped) == 2 && !dropped,
          "batches: the last partial batch kept, one of a single image dropped", "%d %d", b9, b10);
}

static bool same_draw(const fu_sample_augment *a, const fu_sample_augment *b) {
    return a->hflip == b->hflip && a->vflip == b->vflip && a->degrees == b->degrees && a->brightness == b->brightness &&
           a->contrast == b->contrast && a->saturation == b->saturation && a->hue == b->hue;
}

static void check_augment(void) {
    fu_sample_augment a = fu_sample_augment_draw(42, 1, 5), b = fu_sample_augment_draw(42, 1, 5);
    fu_sample_augment c = fu_sample_augment_draw(42, 2, 5);
    CHECK(same_draw(&a, &b) && !same_draw(&a, &c),
          "augmentation: keyed by (seed, epoch, sample)", "degrees %g %g", a.degrees, c.degrees);
    int in_range = 1, flips = 0;
    for (int i = 0; i < 2000; i++) {
        fu_sample_augment s = fu_sample_augment_draw(7, 0, (uint64_t)i);
        in_range &= fabs(s.degrees) <= 15 && fabs(s.brightness - 1) <= 0.1 && fabs(s.contrast - 1) <= 0.1 &&
                    fabs(s.saturation - 1) <= 0.05 && fabs(s.hue) <= 0.05;
        flips += s.hflip;
    }
    CHECK(in_range && flips > 900 && flips < 1100, "augmentation: ranges of the recipe, flips p = 0.5",
          "%d horizontal flips of 2000", flips);

    fu_image im;
    fu_image_alloc(&im, 32, 32, 3);
    for (size_t i = 0; i < fu_image_bytes(&im); i++) im.px[i] = (uint8_t)(i * 7 % 251);
    im.px[0] = 255, im.px[1] = 0, im.px[2] = 128;
    size_t n = 3 * 32 * 32;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    fu_image_to_input(&im, NULL, x);
    CHECK(x[0] == (1.0f - 0.485f) / 0.229f && x[1024] == (0.0f - 0.456f) / 0.224f &&
              x[2048] == (128 / 255.0f - 0.406f) / 0.225f,
          "input: pixels / 255, ImageNet mean and std, (3, H, W)", "%g %g %g", x[0], x[1024], x[2048]);
    fu_image_to_input(&im, &a, x);
    fu_image_to_input(&im, &a, y);
    int same = memcmp(x, y, n * sizeof *x) == 0, finite = 1;
    for (size_t i = 0; i < n; i++) finite &= isfinite(x[i]) && x[i] > -2.2f && x[i] < 2.7f;
    CHECK(same && finite, "augmentation: deterministic, values within the normalised [0, 1] range", "%s", "");
    free(x), free(y);
    fu_image_free(&im);
}

static void check_auc(void) {
    double s1[] = {0.1, 0.4, 0.35, 0.8}, s2[] = {0.2, 0.5, 0.5, 0.9}, s3[] = {0.5, 0.5, 0.5, 0.5};
    int l1[] = {0, 0, 1, 1}, l3[] = {0, 1, 0, 1}, l4[] = {1, 1, 1, 1};
    double a1 = fu_roc_auc(s1, l1, 4), a2 = fu_roc_auc(s2, l1, 4), a3 = fu_roc_auc(s3, l3, 4);
    CHECK(a1 == 0.75 && a2 == 0.875 && a3 == 0.5 && isnan(fu_roc_auc(s1, l4, 4)),
          "ROC AUC: scikit-learn's values, ties count one half, NaN for one class", "%g %g %g", a1, a2, a3);
}

// A shard of pixel records; sizes[i] = side of record i, labels[i].
static void write_shard(const char *path, int n, const int *sizes, const int *labels) {
    FILE *f = fopen(path, "wb");
    fu_shard_writer w;
    fu_shard_writer_init(&w, f, path);
    static uint8_t px[3 * 64 * 64];
    for (int i = 0; i < n; i++) {
        char id[16];
        snprintf(id, sizeof id, "img%d", i);
        for (size_t k = 0; k < sizeof px; k++) px[k] = (uint8_t)(k * (i + 3) % 256);
        fu_record r = {.kind = FU_KIND_PIXELS, .label = labels[i], .height = (uint32_t)sizes[i],
                       .width = (uint32_t)sizes[i], .channels = 3, .id = id, .id_len = (uint32_t)strlen(id),
                       .payload = px, .payload_len = (uint64_t)3 * sizes[i] * sizes[i]};
        fu_shard_write(&w, &r);
    }
    fu_shard_finish(&w);
    fclose(f);
}

static void check_loader(void) {
    char dir[] = "/tmp/fu-test-train-XXXXXX", path[128];
    if (!mkdtemp(dir)) return;
    snprintf(path, sizeof path, "%s/a.shard", dir);
    int sizes[4] = {32, 32, 32, 32}, labels[4] = {0, 1, 0, 1};
    write_shard(path, 4, sizes, labels);
    fu_dataset d;
    int rc = fu_dataset_open(&d, path, 2);
    CHECK(rc == 0 && d.n == 4 && d.width == 32 && d.count[0] == 2 && d.count[1] == 2 && strcmp(d.ids[3], "img3") == 0,
          "dataset: records, size, counts and ids", "%s", fu_error());
    if (rc == 0) {
        uint32_t idx[2] = {2, 0};
        size_t n = 2 * 3 * 32 * 32;
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
        int lx[2], ly[2];
        fu_load_batch(&d, idx, 2, true, 42, 1, 1, x, lx);
        fu_load_batch(&d, idx, 2, true, 42, 1, 1, y, ly);
        int same = memcmp(x, y, n * sizeof *x) == 0;
        fu_load_batch(&d, idx, 2, true, 42, 2, 1, y, ly);
        CHECK(same && memcmp(x, y, n * sizeof *x) != 0 && lx[0] == 0 && lx[1] == 0,
              "batches: the same for (seed, epoch), another epoch augments differently", "%s", "");
        free(x), free(y);
        // Made by 3 threads side by side: the same bytes as by one.
        uint32_t all[4] = {3, 1, 0, 2};
        x = malloc(2 * n * sizeof *x), y = malloc(2 * n * sizeof *y);
        int l1[4], l3[4];
        rc = fu_load_batch(&d, all, 4, true, 42, 5, 1, x, l1) | fu_load_batch(&d, all, 4, true, 42, 5, 3, y, l3);
        CHECK(rc == 0 && memcmp(x, y, 2 * n * sizeof *x) == 0 && memcmp(l1, l3, sizeof l1) == 0,
              "batches: 3 loading threads make one thread's bytes", "%s", fu_error());
        // A record spoilt after the shard was opened (its header's CRC): the
        // first failing sample in batch order is named, whichever thread met it.
        FILE *f = fopen(path, "r+b");
        for (int k = 1; f && k < 4; k += 2) {
            fseek(f, (long)d.idx.offsets[k] + 61, SEEK_SET);
            int c = fgetc(f);
            fseek(f, (long)d.idx.offsets[k] + 61, SEEK_SET);
            fputc(~c & 0xff, f);
        }
        if (f) fclose(f);
        char at3[64];
        snprintf(at3, sizeof at3, "no valid record header at byte %llu", (unsigned long long)d.idx.offsets[3]);
        rc = fu_load_batch(&d, all, 4, true, 42, 5, 3, y, l3);
        CHECK(f && rc < 0 && strstr(fu_error(), at3), "batches: a failure in a loading thread names the first failing sample",
              "%s", fu_error());
        free(x), free(y);
        fu_dataset_close(&d);
    }
    sizes[2] = 40;
    write_shard(path, 4, sizes, labels);
    CHECK(fu_dataset_open(&d, path, 2) < 0 && strstr(fu_error(), "record 2 (img2) is 40x40"),
          "dataset: a record of another size refused, named", "%s", fu_error());
    sizes[2] = 32, labels[1] = FU_LABEL_NONE;
    write_shard(path, 4, sizes, labels);
    CHECK(fu_dataset_open(&d, path, 2) < 0 && strstr(fu_error(), "no label"), "dataset: an unlabelled record refused",
          "%s", fu_error());
    write_shard(path, 0, sizes, labels);
    CHECK(fu_dataset_open(&d, path, 2) < 0 && strstr(fu_error(), "empty"), "dataset: an empty split refused", "%s",
          fu_error());
    unlink(path);
    rmdir(dir);
}

int main(void) {
    fu_model m;
    if (fu_medicalcnn(&m, 32, 32) < 0) return 1;
    check_adamw();
    check_groups(&m);
    check_clipping();
    check_schedule();
    check_class_weights();
    check_order();
    check_augment();
    check_auc();
    check_loader();
    fu_model_free(&m);
    return check_done();
}
