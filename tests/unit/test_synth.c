// The synthetic fundus renderer: deterministic per (seed, index) whatever the
// thread or order, exact class counts, and a cup-to-disc ratio that can be
// measured back from the pixels and differs between the classes.
#include "check.h"
#include "image/synth.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

enum { N = 16, SIDE = 160 };

static fu_image render(const fu_synth_config *c, uint64_t i, fu_synth_truth *t) {
    fu_image im = {0};
    if (fu_synth_render(c, i, &im, t) < 0) {
        printf("not ok - render %llu failed\n", (unsigned long long)i);
        exit(1);
    }
    return im;
}

static bool same_image(const fu_image *a, const fu_image *b) {
    return a->w == b->w && a->h == b->h && a->c == b->c && memcmp(a->px, b->px, fu_image_bytes(a)) == 0;
}

// CDR estimated from the pixels: the cup is the blue-rich part of the disc.
// Reference levels: the rim (median blue on a ring just inside the disc edge)
// and the cup (98th percentile inside the disc); the cup is what lies above
// their midpoint, and CDR ~ sqrt(cup area / disc area).
static double measured_cdr(const fu_image *im, const fu_synth_truth *t) {
    int disc[256] = {0}, ring[256] = {0}, n_disc = 0, n_ring = 0;
    for (uint32_t y = 0; y < im->h; y++)
        for (uint32_t x = 0; x < im->w; x++) {
            double dx = (x - t->disc_x) / t->disc_r, dy = (y - t->disc_y) / t->disc_ry;
            double e = sqrt(dx * dx + dy * dy);
            uint8_t blue = im->px[((size_t)y * im->w + x) * 3 + 2];
            if (e < 1) disc[blue]++, n_disc++;
            if (e > 0.86 && e < 0.94) ring[blue]++, n_ring++;
        }
    int rim = 0, cup = 0;
    for (int v = 0, acc = 0; v < 256 && acc < n_ring / 2; v++) acc += ring[v], rim = v;
    for (int v = 0, acc = 0; v < 256 && acc < n_disc * 98 / 100; v++) acc += disc[v], cup = v;
    int bright = 0;
    for (int v = (rim + cup) / 2 + 1; v < 256; v++) bright += disc[v];
    return sqrt((double)bright / n_disc);
}

int main(void) {
    fu_synth_config cfg = {.seed = 11, .width = SIDE, .height = SIDE, .glaucoma_fraction = 0.5};

    // Same (seed, index) -> same bytes; the order and the thread do not matter.
    fu_image serial[N];
    for (int i = 0; i < N; i++) serial[i] = render(&cfg, i, NULL);
    fu_image again = render(&cfg, 3, NULL);
    CHECK(same_image(&again, &serial[3]), "same seed and index give the same bytes", "image 3 differs");
    fu_image_free(&again);
    int mismatches = 0;
#pragma omp parallel for num_threads(2) schedule(dynamic, 1) reduction(+ : mismatches)
    for (int k = 0; k < N; k++) {
        int i = N - 1 - k; // reverse order, two threads
        fu_image im = render(&cfg, i, NULL);
        mismatches += !same_image(&im, &serial[i]);
        fu_image_free(&im);
    }
    CHECK(mismatches == 0, "rendering on 2 threads in reverse order gives the same bytes", "%d images differ",
          mismatches);
    CHECK(!same_image(&serial[0], &serial[1]), "different indices give different images", "0 and 1 equal");
    fu_synth_config other = cfg;
    other.seed = 12;
    fu_image o = render(&other, 0, NULL);
    CHECK(!same_image(&o, &serial[0]), "a different seed gives a different image", "seed 11 and 12 equal");
    fu_image_free(&o);
    for (int i = 0; i < N; i++) fu_image_free(&serial[i]);

    // Exact, evenly spread class counts.
    const double fractions[] = {0.0, 0.3, 0.5, 0.56, 1.0};
    int bad = 0;
    for (size_t f = 0; f < sizeof fractions / sizeof *fractions; f++) {
        fu_synth_config c = cfg;
        c.glaucoma_fraction = fractions[f];
        int ones = 0;
        for (int n = 1; n <= 705; n++) {
            ones += fu_synth_label(&c, (uint64_t)n - 1);
            if (ones != (int)floor(n * fractions[f] + 0.5)) bad++;
        }
    }
    CHECK(bad == 0, "first n images hold exactly round(n f) glaucoma labels", "%d prefixes off", bad);

    // Geometry and the picture's anatomy, checked from the pixels.
    enum { M = 40 };
    double est[M], truth_cdr[M], sum[2] = {0, 0};
    int count[2] = {0, 0}, left = 0, dark_outside = 1, anatomy_bad = 0, label_bad = 0;
    fu_synth_config big = {.seed = 3, .width = 320, .height = 256, .glaucoma_fraction = 0.5};
    for (int i = 0; i < M; i++) {
        fu_synth_truth t;
        fu_image im = render(&big, i, &t);
        label_bad += t.label != fu_synth_label(&big, i) || (t.label ? t.cdr < 0.55 || t.cdr > 0.85 : t.cdr < 0.25 || t.cdr > 0.6);
        left += t.left_eye;
        if (t.left_eye != (t.disc_x < t.fov_x)) anatomy_bad++;
        double dd = hypot(t.macula_x - t.disc_x, t.macula_y - t.disc_y) / (2 * t.disc_r);
        if (dd < 2.2 || dd > 2.8) anatomy_bad++;
        if (t.fov_r > 128) anatomy_bad++;
        // Outside the field of view: near-black; inside: R > G > B.
        double in[3] = {0, 0, 0};
        for (uint32_t y = 0; y < im.h; y++)
            for (uint32_t x = 0; x < im.w; x++) {
                double r = hypot(x - t.fov_x, y - t.fov_y);
                const uint8_t *p = im.px + ((size_t)y * im.w + x) * 3;
                if (r > t.fov_r + 3 && (p[0] > 40 || p[1] > 40 || p[2] > 40)) dark_outside = 0;
                if (r < 0.8 * t.fov_r)
                    for (int k = 0; k < 3; k++) in[k] += p[k];
            }
        if (!(in[0] > 1.5 * in[1] && in[1] > in[2])) anatomy_bad++;
        // The optic disc is brighter than the retina around it.
        double green_disc = 0, green_around = 0;
        int n_disc = 0, n_around = 0;
        for (uint32_t y = 0; y < im.h; y++)
            for (uint32_t x = 0; x < im.w; x++) {
                double e = hypot((x - t.disc_x) / t.disc_r, (y - t.disc_y) / t.disc_ry);
                double g = im.px[((size_t)y * im.w + x) * 3 + 1];
                if (e < 1) green_disc += g, n_disc++;
                if (e > 2 && e < 3) green_around += g, n_around++;
            }
        if (green_disc / n_disc < 1.3 * green_around / n_around) anatomy_bad++;
        est[i] = measured_cdr(&im, &t);
        truth_cdr[i] = t.cdr;
        sum[t.label] += est[i];
        count[t.label]++;
        fu_image_free(&im);
    }
    CHECK(label_bad == 0, "labels match the class's CDR range", "%d images off", label_bad);
    CHECK(left > 5 && left < M - 5, "both eyes appear (left/right mirror)", "%d of %d left eyes", left, M);
    CHECK(anatomy_bad == 0, "disc side, disc-fovea distance, FOV and colours look like a fundus", "%d faults",
          anatomy_bad);
    CHECK(dark_outside, "the surround outside the field of view is dark", "bright pixel outside");
    double mx = 0, my = 0, sxx = 0, syy = 0, sxy = 0;
    for (int i = 0; i < M; i++) {
        mx += truth_cdr[i] / M;
        my += est[i] / M;
    }
    for (int i = 0; i < M; i++) {
        sxx += (truth_cdr[i] - mx) * (truth_cdr[i] - mx);
        syy += (est[i] - my) * (est[i] - my);
        sxy += (truth_cdr[i] - mx) * (est[i] - my);
    }
    double corr = sxy / sqrt(sxx * syy);
    CHECK(corr > 0.8, "CDR measured from the pixels follows the true CDR", "correlation %.3f", corr);
    double m0 = sum[0] / count[0], m1 = sum[1] / count[1];
    CHECK(m1 - m0 > 0.12, "glaucoma images have a measurably larger cup", "measured mean CDR %.3f vs %.3f", m1, m0);
    printf("# measured CDR: normal %.3f, glaucoma %.3f, correlation with truth %.3f\n", m0, m1, corr);

    fu_image tiny;
    fu_synth_config small = {.seed = 1, .width = 8, .height = 8, .glaucoma_fraction = 0.5};
    CHECK(fu_synth_render(&small, 0, &tiny, NULL) < 0, "a too-small size is refused", "rendered 8x8");
    return check_done();
}
