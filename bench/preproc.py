"""Preprocessing benchmark: fundus tools vs OpenCV 4.6, side by side, one run.

Work per image: decode -> resize to 224 (INTER_AREA) -> RGB->Lab -> CLAHE(2.0,
8x8) on L -> Lab->RGB -> gamma 1.2 LUT -> 3x3 median, on one thread each, the
whole process pinned to CPU 0.
  (a) 512x512 PNGs (the study's input)
  (b) 3072x2048 JPEGs (camera-sized), ours with shrink-on-load (the default)
      and with the exact path (--no-shrink-on-load)
Inputs come from fundus-synth. Ours runs the real tools stage by stage on
shard files (fundus-resize, then fundus-clahe), so shard reading, CRC checks
and writing are included; OpenCV decodes from bytes already in memory. Best
of 3 runs each. Prints img/s, per-stage ms and the ratio.
usage: python3 bench/preproc.py [PNG_COUNT JPEG_COUNT]   (default 100 30)
"""
import os
import subprocess
import sys
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "bin")
OUT = os.path.join(ROOT, "bench", "out")
SIZE = 224
REPEATS = 3


def tool(*args):
    subprocess.run([os.path.join(BIN, args[0]), "--quiet", *args[1:]], check=True)


def make_inputs(png_count, jpeg_count):
    png_dir = os.path.join(OUT, "png-%d" % png_count)
    jpeg_dir = os.path.join(OUT, "jpeg-%d" % jpeg_count)
    if not os.path.exists(os.path.join(png_dir, "labels.csv")):
        tool("fundus-synth", "--count", str(png_count), "--size", "512", "--seed", "7",
             "--format", "png", "--dir", png_dir)
    if not os.path.exists(os.path.join(jpeg_dir, "labels.csv")):
        tool("fundus-synth", "--count", str(jpeg_count), "--width", "3072", "--height", "2048",
             "--seed", "7", "--format", "jpeg", "--dir", jpeg_dir)
    return png_dir, jpeg_dir


def image_files(d):
    with open(os.path.join(d, "labels.csv")) as f:
        rows = [line.split(",")[0] for line in f.read().splitlines()[1:] if line]
    return [os.path.join(d, r) for r in rows]


def opencv(files):
    """Returns (seconds decode, seconds rest) per image, best of REPEATS."""
    cv2.setNumThreads(1)
    blobs = [np.frombuffer(open(p, "rb").read(), np.uint8) for p in files]
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    lut = np.array([round(255 * (i / 255) ** (1 / 1.2)) for i in range(256)], np.uint8)
    best = None
    for _ in range(REPEATS):
        t_dec = t_rest = 0.0
        for b in blobs:
            t0 = time.perf_counter()
            img = cv2.imdecode(b, cv2.IMREAD_COLOR)
            t1 = time.perf_counter()
            img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
            lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB)
            l, a, bb = cv2.split(lab)
            img = cv2.cvtColor(cv2.merge((clahe.apply(l), a, bb)), cv2.COLOR_LAB2BGR)
            img = cv2.medianBlur(cv2.LUT(img, lut), 3)
            t_dec += t1 - t0
            t_rest += time.perf_counter() - t1
        if best is None or sum(best) > t_dec + t_rest:
            best = (t_dec, t_rest)
    return best[0] / len(blobs), best[1] / len(blobs)


def ours(image_dir, n, resize_flags):
    """Returns (seconds resize stage, seconds clahe stage) per image, best of REPEATS."""
    raw, resized, enhanced = (os.path.join(OUT, f) for f in ("raw.shard", "resized.shard", "clahe.shard"))
    tool("shard-pack", "--labels", os.path.join(image_dir, "labels.csv"), "-o", raw)
    best = None
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        tool("fundus-resize", "--threads", "1", "--size", str(SIZE), *resize_flags, "-o", resized, raw)
        t1 = time.perf_counter()
        tool("fundus-clahe", "--threads", "1", "-o", enhanced, resized)
        t2 = time.perf_counter()
        if best is None or sum(best) > t2 - t0:
            best = (t1 - t0, t2 - t1)
    return best[0] / n, best[1] / n


def case(name, image_dir, resize_flags=()):
    files = image_files(image_dir)
    cv_dec, cv_rest = opencv(files)
    us_resize, us_clahe = ours(image_dir, len(files), list(resize_flags))
    cv_rate, us_rate = 1 / (cv_dec + cv_rest), 1 / (us_resize + us_clahe)
    print(f"{name} ({len(files)} images)")
    print(f"  fundus  {us_rate:7.1f} img/s   decode+resize {1e3 * us_resize:7.2f} ms   "
          f"clahe+gamma+median {1e3 * us_clahe:5.2f} ms")
    print(f"  OpenCV  {cv_rate:7.1f} img/s   decode        {1e3 * cv_dec:7.2f} ms   "
          f"resize+rest        {1e3 * cv_rest:5.2f} ms")
    print(f"  ratio   {us_rate / cv_rate:7.2f}x")


def main():
    png_count = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    jpeg_count = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    os.makedirs(OUT, exist_ok=True)
    png_dir, jpeg_dir = make_inputs(png_count, jpeg_count)
    os.sched_setaffinity(0, {0})  # this process, OpenCV and the tools: one core
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} cores; everything pinned to CPU 0; OpenCV {cv2.__version__}")
    case("(a) PNG 512x512 -> 224", png_dir)
    case("(b) JPEG 3072x2048 -> 224, shrink-on-load", jpeg_dir)
    case("(b') JPEG 3072x2048 -> 224, exact path (--no-shrink-on-load)", jpeg_dir, ["--no-shrink-on-load"])


main()
