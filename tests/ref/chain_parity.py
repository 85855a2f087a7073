"""The whole preprocessing chain against OpenCV 4.6, as a user runs it:
  shard-pack | fundus-resize --no-shrink-on-load --size N | fundus-clahe
versus cv2.imread -> cv2.resize(INTER_AREA) -> BGR->Lab -> CLAHE(2.0, 8x8) on
L -> Lab->BGR -> gamma 1.2 LUT (round to nearest) -> medianBlur(3), on real
ACRIMA photographs (JPEG, 178..1420 px) and synthetic PNGs from fundus-synth.
Requirement (issue): >= 99.9% of pixels identical and none more than 1 away."""
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

cv2.setNumThreads(1)
CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
GAMMA = np.array([round(255 * (i / 255) ** (1 / 1.2)) for i in range(256)], np.uint8)


def opencv_chain(path, n):
    img = cv2.resize(cv2.imread(path, cv2.IMREAD_COLOR), (n, n), interpolation=cv2.INTER_AREA)
    l, a, b = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2LAB))
    img = cv2.cvtColor(cv2.merge((CLAHE.apply(l), a, b)), cv2.COLOR_LAB2BGR)
    return cv2.cvtColor(cv2.medianBlur(cv2.LUT(img, GAMMA), 3), cv2.COLOR_BGR2RGB)


def our_chain(csv, n):
    """Runs the three tools joined by pipes; returns {id: RGB array}."""
    pack = subprocess.Popen([common.tool("shard-pack"), "--labels", csv], stdout=subprocess.PIPE)
    resize = subprocess.Popen([common.tool("fundus-resize"), "--no-shrink-on-load", "--size", str(n)],
                              stdin=pack.stdout, stdout=subprocess.PIPE)
    pack.stdout.close()
    out = subprocess.run([common.tool("fundus-clahe")], stdin=resize.stdout, stdout=subprocess.PIPE,
                         check=True).stdout
    resize.stdout.close()
    if pack.wait() != 0 or resize.wait() != 0:
        raise RuntimeError("pipeline failed")
    return {r["id"]: np.frombuffer(r["payload"], np.uint8).reshape(r["h"], r["w"], 3)
            for r in common.read_shard(out)}


def judge(name, folder, csv, n):
    rows = [line.split(",")[0] for line in open(csv).read().splitlines()[1:] if line]
    ours = our_chain(csv, n)
    same = total = worst = 0
    for rel in rows:
        got = ours[os.path.splitext(rel)[0]]
        want = opencv_chain(os.path.join(folder, rel), n)
        d = np.abs(got.astype(int) - want.astype(int))
        same += int((d == 0).sum())
        total += d.size
        worst = max(worst, int(d.max()))
    frac = same / total
    common.report(name, frac >= 0.999 and worst <= 1,
                  "%d images, %.4f%% identical, max diff %d" % (len(rows), 100 * frac, worst))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        common.run("fundus-synth", ["--count", "12", "--size", "512", "--seed", "11", "--dir", tmp + "/synth"])
        for n in (224, 300):
            judge("chain on synthetic 512x512 PNGs -> %d" % n, tmp + "/synth", tmp + "/synth/labels.csv", n)
        acrima = common.acrima_dir()
        if acrima is None:
            common.skip("chain on ACRIMA photographs", "../shared/data/acrima is absent")
            return common.exit_status()
        folder = os.path.dirname(acrima)
        rows = open(os.path.join(folder, "labels.csv")).read().splitlines()
        csv = os.path.join(tmp, "acrima.csv")
        with open(csv, "w") as f:  # every 18th photograph: ~40 of both classes and all sizes
            f.write("path,label\n" + "\n".join(os.path.join(folder, r) for r in rows[1::18]) + "\n")
        for n in (224, 512):
            judge("chain on ACRIMA photographs -> %d" % n, "/", csv, n)
    return common.exit_status()


sys.exit(main())
