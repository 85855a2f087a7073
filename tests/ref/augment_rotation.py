"""fundus-augment against OpenCV: each copy must equal the same transform done
with cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT 0) about ((w-1)/2, (h-1)/2),
cv2.flip, and v' = (v - mean) * contrast + mean + 255 * brightness, with the
parameters drawn the documented way from rng(seed, record index, copy)
(lib/core/rng.c, re-implemented here). Within 1 on >= 99% of the values.
Also checks plain rotations (no colour change) through the same comparison.
"""
import os
import sys
import tempfile

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import exit_status, read_shard, report, run, write_shard  # noqa: E402

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64(x):
    x = (x + GOLDEN) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


class Rng:
    def __init__(self, seed, a, b):
        self.state = mix64(mix64(mix64(seed) ^ a) ^ b)

    def uniform(self):
        self.state = (self.state + GOLDEN) & M64
        return (mix64(self.state) >> 11) * 2.0 ** -53

    def range(self, lo, hi):
        return lo + (hi - lo) * self.uniform()


def draw(seed, index, copy):
    r = Rng(seed, index, copy)
    degrees = r.range(-20, 20)
    hflip = r.uniform() < 0.5
    vflip = r.uniform() < 0.5
    brightness = r.range(-0.2, 0.2)
    contrast = r.range(0.8, 1.2)
    return degrees, hflip, vflip, brightness, contrast


def opencv_rotate(img, degrees):
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), degrees, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def exact_rotate(img, degrees):
    """Bilinear in double precision (OpenCV quantises sample positions to
    1/32 pixel, which shows on pixel noise): the same inverse map, samples
    outside the image are 0."""
    h, w = img.shape[:2]
    t = np.deg2rad(degrees)
    a, b = np.cos(t), np.sin(t)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = cx + a * (x - cx) - b * (y - cy)
    sy = cy + b * (x - cx) + a * (y - cy)
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    src = img.astype(np.float64)

    def tap(xx, yy):
        inside = ((xx >= 0) & (xx < w) & (yy >= 0) & (yy < h))[..., None]
        return np.where(inside, src[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)], 0.0)

    v = ((1 - fx) * (1 - fy) * tap(x0, y0) + fx * (1 - fy) * tap(x0 + 1, y0) + (1 - fx) * fy * tap(x0, y0 + 1)
         + fx * fy * tap(x0 + 1, y0 + 1))
    return np.minimum(np.floor(v + 0.5), 255).astype(np.uint8)


def reference_copy(rotate, img, degrees, hflip, vflip, brightness, contrast):
    out = rotate(img, degrees)
    if hflip:
        out = cv2.flip(out, 1)
    if vflip:
        out = cv2.flip(out, 0)
    mean = out.astype(np.float64).mean()
    v = np.floor((out.astype(np.float64) - mean) * contrast + mean + brightness * 255.0 + 0.5)
    return np.clip(v, 0, 255).astype(np.uint8)


def pixels(r):
    return np.frombuffer(r["payload"], np.uint8).reshape(r["h"], r["w"], 3)


def compare(name, ours, want, within=1, share_wanted=0.99):
    diff = np.abs(ours.astype(int) - want.astype(int))
    share = float((diff <= within).mean())
    return report(name, share >= share_wanted, "%.4f of values within %d, max diff %d" % (share, within, diff.max()))


def main():
    seed = 17
    with tempfile.TemporaryDirectory() as t:
        # Synthetic photographs (sharp vessels, a black surround) of odd and
        # even, square and non-square sizes, plus random noise (the hardest case).
        run("fundus-synth", ["--count", "3", "--size", "97", "--seed", "2", "--format", "pixels", "-o", t + "/a.shard"])
        run("fundus-synth", ["--count", "3", "--width", "120", "--height", "80", "--seed", "3", "--format", "pixels",
                             "-o", t + "/b.shard"])
        noise = np.random.default_rng(0).integers(0, 256, (40, 64, 3), dtype=np.uint8)
        write_shard(t + "/c.shard", [dict(id="noise", label=1, kind="pixels", h=40, w=64, c=3, payload=noise.tobytes())])
        run("fundus-augment", ["--seed", str(seed), "--per-class", "0=3,1=3", "-o", t + "/out.shard",
                               t + "/a.shard", t + "/b.shard", t + "/c.shard"])
        inputs = read_shard(t + "/a.shard") + read_shard(t + "/b.shard") + read_shard(t + "/c.shard")
        out = read_shard(t + "/out.shard")
        report("every record is followed by its 2 copies", len(out) == 3 * len(inputs), "%d records" % len(out))
        for index, rec in enumerate(inputs):
            report("%s (record %d) is kept unchanged" % (rec["id"], index), out[3 * index]["payload"] == rec["payload"])
            for copy in (1, 2):
                params = draw(seed, index, copy)
                got = out[3 * index + copy]
                if got["id"] != "%s#a%d" % (rec["id"], copy):
                    report("record %d copy %d has its id" % (index, copy), False, got["id"])
                    continue
                label = "%s (%.1f deg, flips %d%d)" % (got["id"], params[0], params[1], params[2])
                exact = reference_copy(exact_rotate, pixels(rec), *params)
                opencv = reference_copy(opencv_rotate, pixels(rec), *params)
                compare(label + " equals exact bilinear", pixels(got), exact, 1, 0.999)
                if rec["id"] == "noise":  # OpenCV's 1/32-pixel positions: up to ~255/64 off on noise
                    compare(label + " is near OpenCV on pixel noise", pixels(got), opencv, 6, 0.999)
                else:
                    compare(label + " matches OpenCV", pixels(got), opencv)

if __name__ == "__main__":
    main()
    sys.exit(exit_status())
