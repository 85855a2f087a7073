"""Shared helpers for the oracle tests (tests/ref/*.py): shards in Python,
running the tools, finding the ACRIMA photographs, reporting results.

The shard layout is the one in lib/shard/shard.c (little-endian):
  stream header 64 B: magic, u32 version at 8, CRC-32 of bytes 0..59 at 60
  record header 64 B: "FREC", u8 kind, u8 split, u8 channels, i8 label,
                      u32 height, u32 width, u32 id_len, u32 payload_crc,
                      u64 payload_len, u64 count (end records), CRC at 60
  then id bytes and payload, each zero-padded to 64 bytes.
"""
import os
import shutil
import struct
import subprocess
import sys
import zlib

STREAM_MAGIC = b"\x89SHD\r\n\x1a\n"
RECORD_MAGIC = b"FREC"
KIND_END, KIND_ENCODED, KIND_PIXELS = 0, 1, 2
SPLITS = ["", "train", "val", "test"]


def _pad(n):
    return (n + 63) & ~63


def _header(fields):
    h = bytearray(64)
    h[0:60] = fields.ljust(60, b"\0")
    struct.pack_into("<I", h, 60, zlib.crc32(bytes(h[:60])))
    return bytes(h)


def read_shard(path_or_bytes):
    """Records of a shard (a path or its bytes) as dicts: id, label (None when
    unknown), split, kind ('encoded' or 'pixels'), h, w, c, payload."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        data = bytes(path_or_bytes)
    else:
        with open(path_or_bytes, "rb") as f:
            data = f.read()
    out, pos = [], 0
    while pos < len(data):
        h = data[pos:pos + 64]
        if len(h) < 64:
            raise ValueError("truncated header at byte %d" % pos)
        if struct.unpack_from("<I", h, 60)[0] != zlib.crc32(h[:60]):
            raise ValueError("header CRC mismatch at byte %d" % pos)
        if h[:8] == STREAM_MAGIC:
            pos += 64
            continue
        if h[:4] != RECORD_MAGIC:
            raise ValueError("bad record magic at byte %d" % pos)
        kind, split, c, label = struct.unpack_from("<BBBb", h, 4)
        height, width, id_len, crc, n = struct.unpack_from("<IIIIQ", h, 8)
        pos += 64
        rid = data[pos:pos + id_len].decode()
        pos += _pad(id_len)
        payload = data[pos:pos + n]
        pos += _pad(n)
        if kind == KIND_END:
            continue
        if zlib.crc32(payload) != crc:
            raise ValueError("payload CRC mismatch in record %s" % rid)
        out.append(dict(id=rid, label=None if label < 0 else label, split=SPLITS[split],
                        kind="encoded" if kind == KIND_ENCODED else "pixels",
                        h=height, w=width, c=c, payload=payload))
    return out


def shard_bytes(records):
    """A shard holding `records` (dicts as read_shard returns; kind, h, w, c,
    label and split are optional: kind defaults to 'encoded')."""
    parts = [_header(STREAM_MAGIC + struct.pack("<II", 1, 0))]
    for r in records:
        rid = r["id"].encode()
        payload = bytes(r["payload"])
        kind = KIND_PIXELS if r.get("kind") == "pixels" else KIND_ENCODED
        label = r.get("label")
        fields = RECORD_MAGIC + struct.pack(
            "<BBBbIIIIQQ", kind, SPLITS.index(r.get("split", "")), r.get("c", 0),
            -1 if label is None else label, r.get("h", 0), r.get("w", 0), len(rid),
            zlib.crc32(payload), len(payload), 0)
        parts += [_header(fields), rid.ljust(_pad(len(rid)), b"\0"),
                  payload.ljust(_pad(len(payload)), b"\0")]
    parts.append(_header(RECORD_MAGIC + struct.pack("<BBBbIIIIQQ", KIND_END, 0, 0, 0, 0, 0, 0, 0, 0,
                                                    len(records))))
    return b"".join(parts)


def write_shard(path, records):
    with open(path, "wb") as f:
        f.write(shard_bytes(records))


def tool(name):
    return os.path.join(os.environ.get("FU_BIN", os.path.join(root(), "bin")), name)


def root():
    return os.environ.get("FU_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def run(name, args=(), input_bytes=None, check=True):
    """Run a tool from $FU_BIN; returns (returncode, stdout bytes, stderr text).
    With check=True a non-zero exit raises RuntimeError with the stderr."""
    p = subprocess.run([tool(name)] + list(args), input=input_bytes, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    err = p.stderr.decode(errors="replace")
    if check and p.returncode != 0:
        raise RuntimeError("%s %s: exit %d: %s" % (name, " ".join(args), p.returncode, err.strip()))
    return p.returncode, p.stdout, err


def ldlibs():
    """What the Makefile links every program with (its LDLIBS)."""
    out = subprocess.run(["make", "-s", "--no-print-directory", "-C", root(), "print-ldlibs"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def c_driver_missing():
    """Why a test driver cannot be built here (no build/libfundus.a or no C
    compiler), or None when it can."""
    if not os.path.exists(os.path.join(root(), "build", "libfundus.a")):
        return "needs build/libfundus.a (run make)"
    if not shutil.which(os.environ.get("CC", "cc")):
        return "needs a C compiler"
    return None


def torch_oracle_missing():
    """Why a PyTorch-against-C-driver test cannot run here (no torch for this
    Python, or no driver can be built), or None when it can."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed for %s" % sys.executable
    return c_driver_missing()


def build_c_driver(src, exe):
    """Compile the test driver `src` (a .c file) against build/libfundus.a, as
    the Makefile builds the tools. The compiler's messages go to stderr (the
    test's log); raises CalledProcessError when it does not build."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    subprocess.run([cc, "-std=c11", "-D_GNU_SOURCE", "-O2", "-fopenmp", "-I" + os.path.join(root(), "lib"),
                    src, os.path.join(root(), "build", "libfundus.a"), *ldlibs(), "-o", exe], check=True)


def acrima_dir():
    """The ACRIMA images folder (705 JPEGs), or None when the data is absent."""
    d = os.path.join(root(), "..", "shared", "data", "acrima")
    for sub in ("images", ""):
        p = os.path.join(d, sub)
        if os.path.isdir(p) and any(f.lower().endswith((".jpg", ".jpeg")) for f in os.listdir(p)):
            return os.path.normpath(p)
    return None


failures = 0


def report(name, ok, detail=""):
    """Print one TAP-like line; remembers failures for exit_status()."""
    global failures
    if ok:
        print("ok - %s%s" % (name, (" (%s)" % detail) if detail else ""))
    else:
        failures += 1
        print("not ok - %s%s" % (name, (": %s" % detail) if detail else ""))
    sys.stdout.flush()
    return ok


def skip(name, why):
    print("skip - %s: %s" % (name, why))
    sys.stdout.flush()


def exit_status():
    return 1 if failures else 0
