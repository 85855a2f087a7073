// Synthetic fundus renderer. One image is drawn in three steps:
//   1. the scene: field of view, eye side, disc/cup/macula geometry, colours,
//      illumination, all from rng(seed, index, STREAM_SCENE);
//   2. the vessel tree: random-walk branches grown from the cup, rasterised
//      into a darkness map (H, W) by max-blending anti-aliased segments;
//   3. one pass over the pixels that composes retina, macula, disc, cup,
//      vessels, the dark surround and sensor noise.
// Geometry is expressed in units of the field-of-view radius R, so the same
// (seed, index) gives the same picture at every size, only sharper.
#include "image/synth.h"

#include "core/error.h"
#include "core/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// One rng stream per concern, so a change to one part leaves the others alone.
enum { STREAM_SCENE = 1, STREAM_VESSELS, STREAM_TEXTURE, STREAM_NOISE };

#define TEXTURE_LO 6  // cells per side of the coarse illumination/choroid texture
#define TEXTURE_HI 24 // cells per side of the fine texture

typedef struct {
    float x0, y0, x1, y1; // end points, pixels
    float w0, w1;         // full width at each end, pixels
    float strength;       // darkness at the centre line: veins darker than arteries
} segment;

typedef struct {
    segment *s;
    size_t n, cap;
    int failed;
} segment_list;

typedef struct {
    uint32_t w, h;
    double R, fov_x, fov_y, edge;       // field of view; edge = width of its soft rim
    double tx, ty, dx, dy;              // local frame: temporal unit vector, inferior unit vector
    double disc_x, disc_y, disc_rx, disc_ry;
    double ax, ay;                      // disc's horizontal axis (unit vector); vertical is (-ay, ax)
    double cup_x, cup_y, cup_rx, cup_ry;
    double mac_x, mac_y, mac_depth;
    double retina[3], rim[3], cup[3], background;
    double exposure, vignette, grad, gx, gy;
    double noise_sigma;
    float tex_lo[(TEXTURE_LO + 1) * (TEXTURE_LO + 1)], tex_hi[(TEXTURE_HI + 1) * (TEXTURE_HI + 1)];
    bool left_eye;
    double cdr;
    int label;
} scene;

int fu_synth_label(const fu_synth_config *c, uint64_t index) {
    double f = c->glaucoma_fraction;
    uint64_t before = (uint64_t)floor((double)index * f + 0.5);
    uint64_t upto = (uint64_t)floor((double)(index + 1) * f + 0.5);
    return upto > before;
}

static double smoothstep(double a, double b, double x) {
    double t = (x - a) / (b - a);
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    return t * t * (3 - 2 * t);
}

static void draw_scene(const fu_synth_config *c, uint64_t index, scene *s) {
    fu_rng r = fu_rng_make(c->seed, index, STREAM_SCENE);
    s->w = c->width;
    s->h = c->height;
    double side = c->width < c->height ? c->width : c->height;
    s->label = fu_synth_label(c, index);
    // Overlapping ranges: the cup tells the classes apart only on average.
    s->cdr = s->label ? fu_rng_range(&r, 0.55, 0.85) : fu_rng_range(&r, 0.25, 0.60);

    s->R = 0.5 * side * fu_rng_range(&r, 0.90, 0.97);
    s->fov_x = 0.5 * (c->width - 1) + fu_rng_range(&r, -0.015, 0.015) * side;
    s->fov_y = 0.5 * (c->height - 1) + fu_rng_range(&r, -0.015, 0.015) * side;
    s->edge = fmax(1.0, 0.008 * s->R);

    // Right eye: the disc (nasal) sits right of the macula, so "temporal"
    // points left; a left eye is the mirror image.
    s->left_eye = fu_rng_uniform(&r) < 0.5;
    double theta = fu_rng_range(&r, -0.2, 0.2); // tilt of the disc-macula axis
    double sgn = s->left_eye ? 1 : -1;
    s->tx = sgn * cos(theta);
    s->ty = sgn * sin(theta);
    s->dx = -sin(theta);
    s->dy = cos(theta);

    double R = s->R;
    double off_t = -fu_rng_range(&r, 0.30, 0.38) * R, off_d = fu_rng_range(&r, -0.06, 0.04) * R;
    s->disc_x = s->fov_x + off_t * s->tx + off_d * s->dx;
    s->disc_y = s->fov_y + off_t * s->ty + off_d * s->dy;
    s->disc_rx = fu_rng_range(&r, 0.12, 0.16) * R;
    s->disc_ry = s->disc_rx * fu_rng_range(&r, 1.03, 1.12); // discs are slightly tall ovals
    double phi = fu_rng_range(&r, -0.2, 0.2);
    s->ax = cos(theta + phi);
    s->ay = sin(theta + phi);

    // The cup: its vertical extent is CDR x the disc's; it sits a little
    // temporal of the disc centre, never crossing the rim.
    s->cup_ry = s->cdr * s->disc_ry;
    s->cup_rx = s->cdr * s->disc_rx * fu_rng_range(&r, 0.85, 1.0);
    double shift = fu_rng_range(&r, 0.0, 0.3) * (1 - s->cdr) * s->disc_rx;
    s->cup_x = s->disc_x + shift * s->tx;
    s->cup_y = s->disc_y + shift * s->ty;

    // Fovea ~2.5 disc diameters temporal of the disc, slightly inferior.
    double dd = 2 * s->disc_rx * fu_rng_range(&r, 2.3, 2.7);
    double below = fu_rng_range(&r, 0.1, 0.5) * s->disc_rx;
    s->mac_x = s->disc_x + dd * s->tx + below * s->dx;
    s->mac_y = s->disc_y + dd * s->ty + below * s->dy;
    s->mac_depth = fu_rng_range(&r, 0.25, 0.45);

    // Colours: orange-red retina (pigmentation varies), yellow disc rim,
    // near-white cup; a per-image tint and exposure on top.
    double tint[3];
    for (int k = 0; k < 3; k++) tint[k] = fu_rng_range(&r, 0.92, 1.08);
    s->retina[0] = fu_rng_range(&r, 0.72, 0.88) * tint[0];
    s->retina[1] = fu_rng_range(&r, 0.26, 0.40) * tint[1];
    s->retina[2] = fu_rng_range(&r, 0.07, 0.16) * tint[2];
    s->rim[0] = 0.98 * tint[0];
    s->rim[1] = fu_rng_range(&r, 0.70, 0.82) * tint[1];
    s->rim[2] = fu_rng_range(&r, 0.42, 0.55) * tint[2];
    s->cup[0] = 1.0;
    s->cup[1] = fu_rng_range(&r, 0.90, 0.97);
    s->cup[2] = fu_rng_range(&r, 0.72, 0.85);
    s->background = fu_rng_range(&r, 0.005, 0.03);
    s->exposure = fu_rng_range(&r, 0.72, 1.02);
    s->vignette = fu_rng_range(&r, 0.35, 0.6);
    s->grad = fu_rng_range(&r, 0.0, 0.2);
    double ga = fu_rng_range(&r, 0, 2 * M_PI);
    s->gx = cos(ga);
    s->gy = sin(ga);
    s->noise_sigma = fu_rng_range(&r, 0.004, 0.012);

    fu_rng t = fu_rng_make(c->seed, index, STREAM_TEXTURE);
    for (size_t i = 0; i < sizeof s->tex_lo / sizeof *s->tex_lo; i++) s->tex_lo[i] = (float)fu_rng_range(&t, -1, 1);
    for (size_t i = 0; i < sizeof s->tex_hi / sizeof *s->tex_hi; i++) s->tex_hi[i] = (float)fu_rng_range(&t, -1, 1);
}

// Smoothly interpolated value noise in [-1, 1] at (u, v) in [0, 1]^2.
static double value_noise(const float *grid, int cells, double u, double v) {
    double x = u * cells, y = v * cells;
    int i = (int)x, j = (int)y;
    if (i >= cells) i = cells - 1;
    if (j >= cells) j = cells - 1;
    if (i < 0) i = 0;
    if (j < 0) j = 0;
    double fx = x - i, fy = y - j;
    fx = fx * fx * (3 - 2 * fx);
    fy = fy * fy * (3 - 2 * fy);
    const float *g = grid + j * (cells + 1) + i;
    double top = g[0] + fx * (g[1] - g[0]);
    double bot = g[cells + 1] + fx * (g[cells + 2] - g[cells + 1]);
    return top + fy * (bot - top);
}

// ---- vessels ----------------------------------------------------------------

static void add_segment(segment_list *L, const segment *g) {
    if (L->failed) return;
    if (L->n == L->cap) {
        size_t cap = L->cap ? 2 * L->cap : 1024;
        segment *p = fu_realloc(L->s, cap * sizeof *p);
        if (!p) {
            L->failed = 1;
            return;
        }
        L->s = p;
        L->cap = cap;
    }
    L->s[L->n++] = *g;
}

// Grow one vessel from local point (u, v) (disc-centred, temporal/inferior
// axes, pixels) with heading a: a random walk that bends by `curv` per step,
// tapers, and now and then sends off a thinner branch.
static void grow(segment_list *L, fu_rng *r, const scene *s, double u, double v, double a, double w,
                 double curv, double strength, int depth) {
    double step = 0.035 * s->R, min_w = 0.0025 * s->R;
    for (int i = 0; i < 80 && w >= min_w && !L->failed; i++) {
        double na = a + curv + 0.06 * fu_rng_normal(r);
        double nu = u + step * cos(na), nv = v + step * sin(na);
        double nw = w * (depth ? 0.972 : 0.985); // branches taper faster than trunks
        segment g = {
            .x0 = (float)(s->disc_x + u * s->tx + v * s->dx), .y0 = (float)(s->disc_y + u * s->ty + v * s->dy),
            .x1 = (float)(s->disc_x + nu * s->tx + nv * s->dx), .y1 = (float)(s->disc_y + nu * s->ty + nv * s->dy),
            .w0 = (float)w, .w1 = (float)nw, .strength = (float)strength};
        add_segment(L, &g);
        if (hypot(g.x1 - s->fov_x, g.y1 - s->fov_y) > s->R) break;
        if (depth < 3 && w > 2.5 * min_w && fu_rng_uniform(r) < 0.08) {
            double turn = fu_rng_range(r, 0.35, 0.95) * (fu_rng_uniform(r) < 0.5 ? -1 : 1);
            grow(L, r, s, nu, nv, na + turn, w * fu_rng_range(r, 0.55, 0.75), 0.3 * curv + 0.015 * fu_rng_normal(r),
                 strength * 0.95, depth + 1);
            nw *= 0.92;
        }
        u = nu;
        v = nv;
        a = na;
        w = nw;
        curv *= 0.97;
    }
}

// Four arcades (superior/inferior x temporal/nasal), each a vein and an
// artery side by side. Temporal arcades arch around the macula.
static void grow_tree(segment_list *L, const fu_synth_config *c, uint64_t index, const scene *s) {
    fu_rng r = fu_rng_make(c->seed, index, STREAM_VESSELS);
    // Start at the cup centre, in the local frame.
    double cu = (s->cup_x - s->disc_x) * s->tx + (s->cup_y - s->disc_y) * s->ty;
    for (int arcade = 0; arcade < 4; arcade++) {
        double up = arcade & 1 ? 1 : -1; // -1 superior, +1 inferior (v grows downwards)
        bool temporal = arcade < 2;
        for (int vessel = 0; vessel < 2; vessel++) {
            bool vein = vessel == 0;
            double a = up * (temporal ? M_PI / 2 - fu_rng_range(&r, 0.3, 0.5) : M_PI / 2 + fu_rng_range(&r, 0.5, 0.8));
            a += vein ? 0 : up * fu_rng_range(&r, -0.15, 0.15);
            double curv = temporal ? -up * fu_rng_range(&r, 0.045, 0.065) : up * fu_rng_range(&r, -0.01, 0.015);
            double w = (vein ? 0.022 : 0.016) * s->R * fu_rng_range(&r, 0.9, 1.1);
            double strength = vein ? fu_rng_range(&r, 0.85, 1.0) : fu_rng_range(&r, 0.55, 0.7);
            grow(L, &r, s, cu, 0.1 * up * s->cup_ry, a, w, curv, strength, 0);
        }
    }
}

// Max-blend one anti-aliased, tapered segment into the darkness map.
static void rasterise(const segment *g, float *dark, uint32_t W, uint32_t H) {
    double reach = 0.5 * fmax(g->w0, g->w1) + 1.0;
    int xa = (int)floor(fmin(g->x0, g->x1) - reach), xb = (int)ceil(fmax(g->x0, g->x1) + reach);
    int ya = (int)floor(fmin(g->y0, g->y1) - reach), yb = (int)ceil(fmax(g->y0, g->y1) + reach);
    if (xa < 0) xa = 0;
    if (ya < 0) ya = 0;
    if (xb > (int)W - 1) xb = (int)W - 1;
    if (yb > (int)H - 1) yb = (int)H - 1;
    double ex = g->x1 - g->x0, ey = g->y1 - g->y0, len2 = ex * ex + ey * ey;
    for (int y = ya; y <= yb; y++) {
        float *row = dark + (size_t)y * W;
        for (int x = xa; x <= xb; x++) {
            double px = x - g->x0, py = y - g->y0;
            double t = len2 > 0 ? (px * ex + py * ey) / len2 : 0;
            t = t < 0 ? 0 : t > 1 ? 1 : t;
            double d = hypot(px - t * ex, py - t * ey);
            double half = 0.5 * (g->w0 + t * (g->w1 - g->w0));
            double cover = half + 0.5 - d; // pixel coverage of the vessel's cross-section
            if (cover <= 0) continue;
            if (cover > 1) cover = 1;
            if (half < 0.5) cover *= 2 * half; // thinner than a pixel: fainter, not thinner
            double q = d / (half + 0.5);
            double profile = 0.7 + 0.3 * sqrt(fmax(0.0, 1 - q * q)); // darkest along the centre line
            float val = (float)(g->strength * cover * profile);
            if (val > row[x]) row[x] = val;
        }
    }
}

// ---- composition ------------------------------------------------------------

// A cheap N(0, 1)-like value: a centred sum of four 16-bit uniforms.
static double noise_sample(fu_rng *r) {
    uint64_t b = fu_rng_u64(r);
    double s = (double)(b & 0xffff) + (double)((b >> 16) & 0xffff) + (double)((b >> 32) & 0xffff) + (double)(b >> 48);
    return (s / 65536.0 - 2.0) * 1.7320508075688772; // var of the sum is 4/12
}

static void compose(const scene *s, const float *dark, fu_rng *noise, uint8_t *px) { // px: (H, W, 3)
    static const double vessel_tint[3] = {0.38, 0.68, 0.72}; // blood: red survives, green/blue absorbed
    double R = s->R, rd = s->disc_rx;
    for (uint32_t y = 0; y < s->h; y++) {
        for (uint32_t x = 0; x < s->w; x++) {
            double fx = x - s->fov_x, fy = y - s->fov_y;
            double rho = sqrt(fx * fx + fy * fy) / R;
            double inside = smoothstep(-0.5, 0.5, (R - rho * R) / s->edge);
            double col[3] = {s->background, s->background, s->background};
            if (inside > 0) {
                double illum = s->exposure * (1 - s->vignette * pow(rho, 2.5)) * (1 + s->grad * (fx * s->gx + fy * s->gy) / R);
                double u = (double)x / s->w, v = (double)y / s->h;
                double tex = 1 + 0.08 * value_noise(s->tex_lo, TEXTURE_LO, u, v) + 0.035 * value_noise(s->tex_hi, TEXTURE_HI, u, v);
                double ret[3];
                for (int k = 0; k < 3; k++) ret[k] = s->retina[k] * illum * tex;

                // Peripapillary glow, darker macula, darkest fovea with a small reflex.
                double pdx = x - s->disc_x, pdy = y - s->disc_y;
                double dd2 = (pdx * pdx + pdy * pdy) / (rd * rd);
                if (dd2 < 36) {
                    double glow = 1 + 0.18 * exp(-dd2 / 6.25);
                    for (int k = 0; k < 3; k++) ret[k] *= glow;
                }
                double mdx = x - s->mac_x, mdy = y - s->mac_y;
                double dm2 = (mdx * mdx + mdy * mdy) / (rd * rd);
                double avascular = 1;
                if (dm2 < 25) {
                    double m = (1 - s->mac_depth * exp(-dm2 / 2.25)) * (1 - 0.15 * exp(-dm2 / 0.12));
                    double reflex = 0.12 * exp(-dm2 / 0.004);
                    for (int k = 0; k < 3; k++) ret[k] = ret[k] * m + reflex * illum;
                    avascular = 1 - exp(-dm2 / 0.8);
                }

                // Disc and cup: ellipses in the disc's own axes, soft edged.
                if (dd2 < 4) {
                    double a = pdx * s->ax + pdy * s->ay, b = -pdx * s->ay + pdy * s->ax;
                    double e = sqrt(a * a / (s->disc_rx * s->disc_rx) + b * b / (s->disc_ry * s->disc_ry));
                    double wd = 1 - smoothstep(0.88, 1.06, e);
                    double cdx = x - s->cup_x, cdy = y - s->cup_y;
                    double ca = cdx * s->ax + cdy * s->ay, cb = -cdx * s->ay + cdy * s->ax;
                    double ec = sqrt(ca * ca / (s->cup_rx * s->cup_rx) + cb * cb / (s->cup_ry * s->cup_ry));
                    double wc = 1 - smoothstep(0.8, 1.15, ec);
                    double lit = s->exposure * (1 - 0.5 * s->vignette * pow(rho, 2.5)) * (0.5 + 0.5 * tex); // half the retina's texture
                    for (int k = 0; k < 3; k++) {
                        double disc = s->rim[k] + wc * (s->cup[k] - s->rim[k]);
                        ret[k] += wd * (disc * lit * 1.08 - ret[k]);
                    }
                }

                double vd = dark[(size_t)y * s->w + x] * avascular;
                for (int k = 0; k < 3; k++) col[k] = inside * ret[k] * (1 - vd * vessel_tint[k]) + (1 - inside) * col[k];
            }
            uint8_t *o = px + ((size_t)y * s->w + x) * 3;
            for (int k = 0; k < 3; k++) {
                double val = (col[k] + s->noise_sigma * noise_sample(noise)) * 255.0 + 0.5;
                o[k] = (uint8_t)(val < 0 ? 0 : val > 255 ? 255 : val);
            }
        }
    }
}

int fu_synth_render(const fu_synth_config *c, uint64_t index, fu_image *out, fu_synth_truth *truth) {
    if (c->width < 16 || c->height < 16)
        return fu_fail("synth", "image size %ux%u is too small (at least 16x16)", c->width, c->height);
    if (!(c->glaucoma_fraction >= 0 && c->glaucoma_fraction <= 1))
        return fu_fail("synth", "glaucoma fraction %g is not in 0..1", c->glaucoma_fraction);
    scene *s = fu_malloc(sizeof *s);
    if (!s) return -1;
    draw_scene(c, index, s);
    segment_list L = {0};
    grow_tree(&L, c, index, s);
    float *dark = L.failed ? NULL : fu_calloc((size_t)c->width * c->height, sizeof *dark);
    int rc = -1;
    if (dark && fu_image_alloc(out, c->width, c->height, 3) == 0) {
        for (size_t i = 0; i < L.n; i++) rasterise(&L.s[i], dark, c->width, c->height);
        fu_rng noise = fu_rng_make(c->seed, index, STREAM_NOISE);
        compose(s, dark, &noise, out->px);
        if (truth) {
            *truth = (fu_synth_truth){.label = s->label, .cdr = s->cdr, .fov_x = s->fov_x, .fov_y = s->fov_y,
                                      .fov_r = s->R, .disc_x = s->disc_x, .disc_y = s->disc_y,
                                      .disc_r = s->disc_rx, .disc_ry = s->disc_ry, .macula_x = s->mac_x,
                                      .macula_y = s->mac_y, .left_eye = s->left_eye};
        }
        rc = 0;
    }
    free(dark);
    free(L.s);
    free(s);
    return rc;
}
