#!/bin/sh
# Builds this project with CUDA 12, the last toolkit that targets the V100
# (sm_70), on a machine that has only CUDA 13 or none (docs/gpu.md, "Checking
# the CUDA 12 build"). Run by hand, not in CI: the first run downloads ~1.4 GB.
#   sh tests/gpu/cuda12-build.sh [DIR]     DIR: $XDG_CACHE_HOME/fundus-cuda12
# 1. Assembles a CUDA 12.4.1 toolkit in DIR/cuda (a CUDA_HOME) from pinned
#    packages: the compiler (nvcc, cicc, cudafe++, ptxas, fatbinary, nvlink,
#    cuobjdump) from Debian 13's non-free nvidia-cuda-toolkit, because NVIDIA's
#    CUDA 12 nvcc wheel holds ptxas only; headers and libraries (cudart,
#    cuBLAS, cuDNN 9, nccl.h) from NVIDIA's PyPI wheels. Reused when complete.
# 2. Copies the work tree (tracked and untracked, not ignored files) to
#    DIR/src and builds every tool and the GPU test there from scratch.
# 3. Fails when anything does not compile or link, when the build prints a
#    warning, when CUDA 12 was not the toolkit used, or when the GPU test
#    binary lacks sm_70, sm_80, sm_90 machine code or compute_90 PTX.
# Needs apt-get and dpkg-deb (Debian or Ubuntu; Debian's archive keyring,
# package debian-archive-keyring), pip ($PIP, default `python3 -m pip`), tar.
# The apt download uses its own state under DIR: the system's apt is untouched.
set -eu

DIR=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/fundus-cuda12}
PIP=${PIP:-python3 -m pip}
JOBS=${JOBS:-$(nproc)}
REPO=$(cd "$(dirname "$0")/../.." && pwd)

# The pinned set. Compiler and cudart/cuBLAS are one CUDA release (12.4.1);
# cuDNN and NCCL are the versions the CUDA 13 build uses, in their CUDA 12
# builds (only the headers and libcudnn.so.9 are needed to link; NCCL is
# loaded at run time).
DEB_SUITE=trixie
DEB_VERSION=12.4.131~12.4.1-2   # nvidia-cuda-toolkit
V_NVCC=12.4.131 V_CUDART=12.4.127 V_CCCL=12.4.127.post1 V_CUBLAS=12.4.5.8
V_CUDNN=9.19.0.56 V_NCCL=2.28.9
WHEELS="nvidia-cuda-nvcc-cu12==$V_NVCC nvidia-cuda-runtime-cu12==$V_CUDART
        nvidia-cuda-cccl-cu12==$V_CCCL nvidia-cublas-cu12==$V_CUBLAS
        nvidia-cudnn-cu12==$V_CUDNN nvidia-nccl-cu12==$V_NCCL"
DEB="$DIR/debs/nvidia-cuda-toolkit_${DEB_VERSION}_amd64.deb"
STAMP="nvidia-cuda-toolkit=$DEB_VERSION $WHEELS"

CUDA="$DIR/cuda"
say() { echo "cuda12-build: $*"; }
die() { echo "cuda12-build: FAILED: $*" >&2; exit 1; }

# ---- 1. the toolkit ------------------------------------------------------------
download() {
    mkdir -p "$DIR/wheels" "$DIR/debs"
    say "pip download (pinned; files already in $DIR/wheels are reused)"
    # shellcheck disable=SC2086 # WHEELS is a list of words
    $PIP download --quiet --no-deps --only-binary=:all: -d "$DIR/wheels" $WHEELS || die "pip download of $WHEELS"

    [ -f "$DEB" ] && return
    say "apt-get download nvidia-cuda-toolkit=$DEB_VERSION (Debian $DEB_SUITE non-free, private apt state in $DIR/apt)"
    if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
        die "apt-get and dpkg-deb are needed for CUDA 12's nvcc (not on PyPI)"
    fi
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -r "$keyring" ] || die "no $keyring: install the package debian-archive-keyring"
    apt="$DIR/apt"
    mkdir -p "$apt/etc/sources.list.d" "$apt/etc/preferences.d" "$apt/lists/partial" \
        "$apt/cache/archives/partial"
    : >"$apt/status"
    echo "deb [signed-by=$keyring] http://deb.debian.org/debian $DEB_SUITE non-free" \
        >"$apt/etc/sources.list"
    set -- -o Dir::Etc="$apt/etc" -o Dir::Etc::sourcelist="$apt/etc/sources.list" \
        -o Dir::Etc::sourceparts="$apt/etc/sources.list.d" \
        -o Dir::Etc::preferencesparts="$apt/etc/preferences.d" \
        -o Dir::State::Lists="$apt/lists" -o Dir::State::status="$apt/status" \
        -o Dir::Cache="$apt/cache" -o APT::Architecture=amd64 -o APT::Sandbox::User=root
    apt-get "$@" -qq update || die "apt-get update ($DEB_SUITE non-free)"
    (cd "$DIR/debs" && apt-get "$@" -qq download "nvidia-cuda-toolkit=$DEB_VERSION") ||
        die "apt-get download nvidia-cuda-toolkit=$DEB_VERSION (a newer Debian revision? update DEB_VERSION)"
}

# unwheel WHEEL PATH DEST: the wheel's file PATH, or the files under the
# folder PATH, into DEST.
unwheel() {
    python3 - "$@" <<'EOF' || die "unpacking $2 from $1"
import os, shutil, sys, zipfile
wheel, path, dest = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3]
found = 0
with zipfile.ZipFile(wheel) as z:
    for m in z.infolist():
        name = m.filename
        if m.is_dir() or name.endswith("__init__.py"):
            continue
        if name == path:
            out = dest
        elif name.startswith(path + "/"):
            out = os.path.join(dest, name[len(path) + 1:])
        else:
            continue
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(m) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
        if m.external_attr >> 16 & 0o111:
            os.chmod(out, 0o755)
        found += 1
sys.exit(0 if found else f"{wheel} has no {path}")
EOF
}

# lib NAME.so.N: NAME.so.N (already in lib64) gets its link-time name NAME.so.
lib() { ln -sf "$1" "$CUDA/lib64/${1%.so.*}.so"; }

assemble() {
    say "assembling $CUDA"
    rm -rf "$CUDA" "$DIR/deb-root"
    mkdir -p "$CUDA/bin/crt" "$CUDA/nvvm/bin" "$CUDA/nvvm/libdevice" "$CUDA/include" \
        "$CUDA/lib64" "$DIR/deb-root"
    dpkg-deb -x "$DEB" "$DIR/deb-root" || die "dpkg-deb -x $DEB"
    d="$DIR/deb-root/usr/lib/nvidia-cuda-toolkit"
    # Debian's /usr/bin/nvcc is a wrapper script; the tools are the real ones.
    cp "$d/bin/nvcc" "$CUDA/bin/"
    cp "$d/bin/cicc" "$CUDA/nvvm/bin/"
    cp "$d/bin/crt/link.stub" "$d/bin/crt/prelink.stub" "$CUDA/bin/crt/"
    cp "$d/libdevice/libdevice.10.bc" "$CUDA/nvvm/libdevice/"
    for t in cudafe++ ptxas fatbinary nvlink cuobjdump bin2c; do
        cp "$DIR/deb-root/usr/bin/$t" "$CUDA/bin/"
    done
    rm -rf "$DIR/deb-root"
    # Where a CUDA install's nvcc finds the rest (Debian's points into /usr).
    cat >"$CUDA/bin/nvcc.profile" <<'EOF'
TOP              = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
LD_LIBRARY_PATH += $(TOP)/lib64:
PATH            += $(TOP)/nvvm/bin:$(_HERE_):
INCLUDES        +=  "-I$(TOP)/include" $(_SPACE_)
LIBRARIES        =+ $(_SPACE_) "-L$(TOP)/lib64/stubs" "-L$(TOP)/lib64"
CUDAFE_FLAGS    +=
PTXAS_FLAGS     +=
EOF
    w="$DIR/wheels"
    # crt/ and fatbinary_section.h belong to nvcc; nv/, cuda/ (used by
    # cuda_fp16.hpp, cuda_bf16.hpp) to CCCL.
    unwheel "$w/nvidia_cuda_nvcc_cu12-$V_NVCC-"*.whl nvidia/cuda_nvcc/include "$CUDA/include"
    unwheel "$w/nvidia_cuda_cccl_cu12-$V_CCCL-"*.whl nvidia/cuda_cccl/include "$CUDA/include"
    unwheel "$w/nvidia_cuda_runtime_cu12-$V_CUDART-"*.whl nvidia/cuda_runtime/include "$CUDA/include"
    unwheel "$w/nvidia_cublas_cu12-$V_CUBLAS-"*.whl nvidia/cublas/include "$CUDA/include"
    unwheel "$w/nvidia_cudnn_cu12-$V_CUDNN-"*.whl nvidia/cudnn/include "$CUDA/include"
    unwheel "$w/nvidia_nccl_cu12-$V_NCCL-"*.whl nvidia/nccl/include "$CUDA/include"
    unwheel "$w/nvidia_cuda_runtime_cu12-$V_CUDART-"*.whl nvidia/cuda_runtime/lib "$CUDA/lib64"
    unwheel "$w/nvidia_cublas_cu12-$V_CUBLAS-"*.whl nvidia/cublas/lib "$CUDA/lib64"
    # cuDNN's loader only: enough to link; its engines (~1 GB) load at run time.
    unwheel "$w/nvidia_cudnn_cu12-$V_CUDNN-"*.whl nvidia/cudnn/lib/libcudnn.so.9 "$CUDA/lib64/libcudnn.so.9"
    rm -f "$CUDA/lib64/libnvblas.so.12"
    lib libcudart.so.12; lib libcublas.so.12; lib libcublasLt.so.12; lib libcudnn.so.9
    echo "$STAMP" >"$CUDA/.complete"
}

if [ "$(cat "$CUDA/.complete" 2>/dev/null)" = "$STAMP" ]; then
    say "reusing $CUDA"
else
    start=$(date +%s)
    download
    assemble
    say "toolkit ready in $(($(date +%s) - start)) s: $(du -sh "$CUDA" | cut -f1) in $CUDA, \
$(du -sh "$DIR/wheels" "$DIR/debs" | cut -f1 | paste -sd+ -) downloaded"
fi
"$CUDA/bin/nvcc" --version | grep -q 'release 12\.' || die "$CUDA/bin/nvcc is not CUDA 12"

# ---- 2. the build --------------------------------------------------------------
say "copying $REPO to $DIR/src"
rm -rf "$DIR/src"
mkdir -p "$DIR/src"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
    tar --null -T - --ignore-failed-read -cf -) | tar -xf - -C "$DIR/src" || die "copying the tree"

# The check is of the Makefile's defaults for CUDA 12, whatever the caller's
# environment says.
unset GPU_ARCH NVCC NVCCFLAGS USE_CUDA
say "make -j$JOBS USE_CUDA=1 CUDA_HOME=$CUDA all build/tests/gpu/test_cuda (log: $DIR/build.log)"
if ! make -C "$DIR/src" --no-print-directory -j"$JOBS" USE_CUDA=1 CUDA_HOME="$CUDA" \
    all build/tests/gpu/test_cuda >"$DIR/build.log" 2>&1; then
    tail -n 40 "$DIR/build.log" >&2
    die "the build failed (whole log: $DIR/build.log)"
fi
if grep -n -i 'warning' "$DIR/build.log" >&2; then
    die "the build printed warnings (above; whole log: $DIR/build.log)"
fi

# ---- 3. what was built ---------------------------------------------------------
bin="$DIR/src/build/tests/gpu/test_cuda"
elf=$("$CUDA/bin/cuobjdump" --list-elf "$bin") || die "cuobjdump --list-elf $bin"
ptx=$("$CUDA/bin/cuobjdump" --list-ptx "$bin") || die "cuobjdump --list-ptx $bin"
# Each kernel-holding object brings one cubin per architecture.
n70=$(echo "$elf" | grep -c '\.sm_70\.cubin') || die "no sm_70 machine code in $bin"
for sm in sm_80 sm_90; do
    [ "$(echo "$elf" | grep -c "\.$sm\.cubin")" = "$n70" ] ||
        die "not one $sm cubin for each of the $n70 sm_70 ones in $bin:
$elf"
done
echo "$ptx" | grep -q '\.sm_90\.ptx' || die "no compute_90 PTX in $bin"
needed=$(readelf -d "$bin" | grep NEEDED)
for l in libcudart.so.12 libcublas.so.12 libcudnn.so.9; do
    echo "$needed" | grep -q "\[$l\]" || die "$bin does not link $l"
done
say "ok: every tool and $bin built with $("$CUDA/bin/nvcc" --version | sed -n 's/.*\(release [^,]*\).*/\1/p'), \
no warnings; $n70 cubins each for sm_70, sm_80, sm_90, and compute_90 PTX"
