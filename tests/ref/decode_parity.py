"""Decoding parity with OpenCV: our decoder (through fundus-resize at the
image's own size, where the resize is a copy) must give exactly the pixels of
cv2.imread(path, IMREAD_COLOR) reversed to RGB, for ACRIMA JPEGs, JPEG kinds
written by cv2 (progressive, gray, 4:4:4), PNGs of every colour type and depth
and TIFFs (8/16-bit, gray/RGB/RGBA, none/LZW/deflate). Broken files must fail
with one error line."""
import os
import random
import struct
import sys
import tempfile
import zlib

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def decode_ours(blobs, side):
    """Our RGB pixels for each encoded blob; all must be side x side."""
    recs = [dict(id="img%d" % i, payload=b) for i, b in enumerate(blobs)]
    _, out, _ = common.run("fundus-resize", ["--size", str(side), "--no-shrink-on-load", "--threads", "2"],
                           common.shard_bytes(recs))
    return [np.frombuffer(r["payload"], np.uint8).reshape(r["h"], r["w"], 3) for r in common.read_shard(out)]


def cv2_rgb(blob):
    im = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    return None if im is None else im[:, :, ::-1]


def compare(name, blob):
    ref = cv2_rgb(blob)
    if ref is None:
        return common.report(name, False, "OpenCV cannot read the test image")
    ours = decode_ours([blob], ref.shape[0])[0]
    if ours.shape != ref.shape:
        return common.report(name, False, "shape %s, OpenCV %s" % (ours.shape, ref.shape))
    d = np.abs(ours.astype(int) - ref)
    return common.report(name, d.max() == 0, "max diff %d, %.3f%% differ" % (d.max(), 100 * (d > 0).mean()))


def compare_resized(name, blob, n):
    """For non-square images: compare after resizing both to n x n (the resize
    itself is bit-exact, tests/ref/resize_parity.py)."""
    ref = cv2_rgb(blob)
    _, out, _ = common.run("fundus-resize", ["--size", str(n), "--no-shrink-on-load"],
                           common.shard_bytes([dict(id="img", payload=blob)]))
    r = common.read_shard(out)[0]
    ours = np.frombuffer(r["payload"], np.uint8).reshape(r["h"], r["w"], 3)
    want = cv2.resize(ref, (n, n), interpolation=cv2.INTER_AREA)
    d = np.abs(ours.astype(int) - want)
    return common.report(name, d.max() == 0, "max diff %d, %.3f%% differ" % (d.max(), 100 * (d > 0).mean()))


def with_exif_orientation(jpeg, orientation, big_endian=False):
    """The JPEG with an APP1 EXIF segment holding just the orientation tag."""
    e = ">" if big_endian else "<"
    tiff = (b"MM" if big_endian else b"II") + struct.pack(e + "HI", 42, 8) + struct.pack(e + "H", 1) + \
        struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(e + "I", 0)
    body = b"Exif\0\0" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_filter(rows, bpp, filters):
    """Filter each row with the given PNG filter type (cycled): 0 none, 1 sub,
    2 up, 3 average, 4 Paeth."""
    out, prev = [], np.zeros(len(rows[0]), np.int32)
    for y, r in enumerate(rows):
        x = np.frombuffer(r, np.uint8).astype(np.int32)
        f = filters[y % len(filters)]
        left = np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
        if f == 0:
            pred = np.zeros_like(x)
        elif f == 1:
            pred = left
        elif f == 2:
            pred = prev
        elif f == 3:
            pred = (left + prev) // 2
        else:
            pa, pb, pc = np.abs(prev - upleft), np.abs(left - upleft), np.abs(left + prev - 2 * upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
        out.append(bytes([f]) + ((x - pred) & 255).astype(np.uint8).tobytes())
        prev = x
    return out


def make_png(rows, width, color_type, depth, plte=None, trns=None, bpp=1, filters=(0,), idat_size=None):
    """A PNG from packed rows (bytes each), written here so that palettes, low
    bit depths, every filter type and odd IDAT splits get tested, which
    cv2.imwrite does not produce."""
    data = zlib.compress(b"".join(png_filter(rows, bpp, filters)), 6)
    ihdr = struct.pack(">IIBBBBB", width, len(rows), depth, color_type, 0, 0, 0)
    parts = [b"\x89PNG\r\n\x1a\n", png_chunk(b"IHDR", ihdr)]
    if plte:
        parts.append(png_chunk(b"PLTE", plte))
    if trns:
        parts.append(png_chunk(b"tRNS", trns))
    step = idat_size or len(data)
    parts += [png_chunk(b"IDAT", data[i:i + step]) for i in range(0, len(data), step)]
    parts.append(png_chunk(b"IEND", b""))
    return b"".join(parts)


def test_acrima():
    d = common.acrima_dir()
    if not d:
        common.skip("acrima jpegs decode like cv2.imread", "ACRIMA data not found next to the repo")
        return
    files = sorted(f for f in os.listdir(d) if f.lower().endswith((".jpg", ".jpeg")))
    random.Random(1).shuffle(files)
    checked, worst, by_side = 0, 0, {}
    for f in files:
        blob = open(os.path.join(d, f), "rb").read()
        ref = cv2_rgb(blob)
        if ref.shape[0] == ref.shape[1]:
            by_side.setdefault(ref.shape[0], []).append((f, blob, ref))
            checked += 1
        if checked == 30:
            break
    bad = []
    for side, items in by_side.items():
        for (f, _, ref), ours in zip(items, decode_ours([b for _, b, _ in items], side)):
            diff = int(np.abs(ours.astype(int) - ref).max()) if ours.shape == ref.shape else 999
            worst = max(worst, diff)
            if diff:
                bad.append(f)
    common.report("acrima jpegs decode like cv2.imread", not bad,
                  "%d images, %d differ (max diff %d) %s" % (checked, len(bad), worst, " ".join(bad[:5])))


def smooth_image(h, w, seed):
    rng = np.random.default_rng(seed)
    im = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.GaussianBlur(im, (0, 0), 2)


def test_jpeg_kinds(tmp):
    bgr = smooth_image(96, 96, 1)
    kinds = [("baseline q90", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90]),
             ("progressive", bgr, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
             ("grayscale", bgr[:, :, 1], []),
             ("odd size 4:2:0", smooth_image(77, 77, 2), [])]
    if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR"):
        kinds.append(("4:4:4", bgr, [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]))
    for name, img, params in kinds:
        ok, buf = cv2.imencode(".jpg", img, params)
        compare("jpeg %s decodes like cv2.imread" % name, buf.tobytes())
    # EXIF orientation: cv2.imread rotates and flips; a non-square noise image
    # shows any wrong turn.
    noise = np.random.default_rng(9).integers(0, 256, (40, 64, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    for o in range(1, 9):
        compare_resized("jpeg with EXIF orientation %d decodes like cv2.imread" % o,
                        with_exif_orientation(jpeg, o, big_endian=o % 2 == 0), 32)


def test_png_kinds():
    bgr = smooth_image(40, 40, 3)
    rng = np.random.default_rng(4)
    b16 = bgr.astype(np.uint16) * 257 + rng.integers(0, 257, bgr.shape).astype(np.uint16)
    alpha = rng.integers(0, 256, (40, 40, 1), dtype=np.uint8)
    arrays = [("8-bit RGB", bgr), ("16-bit RGB", b16), ("8-bit gray", bgr[:, :, 0]), ("16-bit gray", b16[:, :, 0]),
              ("8-bit RGBA", np.dstack([bgr, alpha])), ("16-bit RGBA", np.dstack([b16, alpha.astype(np.uint16) * 300]))]
    for name, arr in arrays:
        ok, buf = cv2.imencode(".png", arr)
        compare("png %s decodes like cv2.imread" % name, buf.tobytes())
    idx = rng.integers(0, 16, (24, 24), dtype=np.uint8)
    plte = bytes(rng.integers(0, 256, 48, dtype=np.uint8))
    rows8 = [bytes(r) for r in idx]
    compare("png palette with tRNS decodes like cv2.imread",
            make_png(rows8, 24, 3, 8, plte=plte, trns=bytes(range(0, 160, 10))))
    rows4 = [bytes((a << 4) | b for a, b in zip(r[0::2], r[1::2])) for r in idx]
    compare("png 4-bit palette decodes like cv2.imread", make_png(rows4, 24, 3, 4, plte=plte))
    rows1 = [np.packbits(r & 1).tobytes() for r in idx]
    compare("png 1-bit gray decodes like cv2.imread", make_png(rows1, 24, 0, 1))
    ga = np.dstack([idx * 16, idx]).astype(np.uint8)
    compare("png 8-bit gray+alpha decodes like cv2.imread", make_png([bytes(r) for r in ga.reshape(24, 48)], 24, 4, 8))
    # Every filter type for every 8-bit layout, and IDAT split into tiny chunks.
    noisy = rng.integers(0, 256, (31, 31, 4), dtype=np.uint8)
    for name, ctype, ch in (("gray", 0, 1), ("gray+alpha", 4, 2), ("RGB", 2, 3), ("RGBA", 6, 4)):
        rows = [bytes(r) for r in noisy[:, :, :ch].reshape(31, 31 * ch)]
        for filters, what in (((0, 1, 2, 3, 4), "all filters"), ((4,), "Paeth"), ((3,), "average")):
            compare("png 8-bit %s with %s decodes like cv2.imread" % (name, what),
                    make_png(rows, 31, ctype, 8, bpp=ch, filters=filters))
        compare("png 8-bit %s in 1-byte IDAT chunks decodes like cv2.imread" % name,
                make_png(rows, 31, ctype, 8, bpp=ch, filters=(1, 4), idat_size=1))


def test_tiff_kinds(tmp):
    bgr = smooth_image(48, 48, 5)
    rng = np.random.default_rng(6)
    b16 = bgr.astype(np.uint16) * 257 + rng.integers(0, 257, bgr.shape).astype(np.uint16)
    arrays = [("8-bit RGB", bgr), ("16-bit RGB", b16), ("8-bit gray", bgr[:, :, 0]), ("16-bit gray", b16[:, :, 0]),
              ("8-bit RGBA", np.dstack([bgr, bgr[:, :, :1]]))]
    for comp_name, comp in (("none", 1), ("LZW", 5), ("deflate", 32946)):
        for name, arr in arrays:
            path = os.path.join(tmp, "t.tif")
            cv2.imwrite(path, arr, [cv2.IMWRITE_TIFF_COMPRESSION, comp])
            compare("tiff %s %s decodes like cv2.imread" % (name, comp_name), open(path, "rb").read())


def test_broken():
    ok, buf = cv2.imencode(".jpg", smooth_image(64, 64, 7))
    jpg = buf.tobytes()
    ok, buf = cv2.imencode(".png", smooth_image(64, 64, 8))
    png = buf.tobytes()
    cases = [("truncated jpeg", jpg[:len(jpg) // 2], "truncated"), ("truncated png", png[:len(png) // 2], "PNG"),
             ("text", b"just some text, not an image", "not a PNG, JPEG or TIFF"),
             ("empty", b"", "empty")]
    for name, blob, pattern in cases:
        rc, out, err = common.run("fundus-resize", ["--size", "64"],
                                  common.shard_bytes([dict(id="bad", payload=blob)]), check=False)
        lines = [l for l in err.splitlines() if ": hint: " not in l]
        good = rc == 1 and len(lines) == 1 and pattern in lines[0] and lines[0].startswith("fundus-resize: ") \
            and not out
        common.report("%s fails with one error line" % name, good, "exit %d, stderr %r" % (rc, err[:300]))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        test_acrima()
        test_jpeg_kinds(tmp)
        test_png_kinds()
        test_tiff_kinds(tmp)
        test_broken()
    return common.exit_status()


if __name__ == "__main__":
    sys.exit(main())
