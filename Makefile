# fundus: glaucoma-detector training toolkit in C.
#   make            build every tool into bin/ (from one static library)
#   make demo       the main job on the embedded synthetic data
#   make test       every test; ends with "N passed, N failed"
#   make deps       install missing Debian packages (root) or print the apt-get line
#   make install PREFIX=/usr/local
#   make fuzz       run the libFuzzer harnesses for a bounded time
#   make bench      side-by-side benchmarks (bench/README.md)

VERSION  := 0.1.0
PREFIX   ?= /usr/local
CC       ?= cc
PYTHON   ?= /usr/bin/python3
# Portable by default: baseline x86-64. Hot loops that want AVX2 use
# target_clones, so one binary runs everywhere. `make ARCH=native` for more.
# -ffp-contract=off: fused multiply-adds would change rounding and break the
# bit-exact agreement with OpenCV (CLAHE's blend, Lab tables).
ARCH     ?=
OPT      ?= -O3
CFLAGS   ?= $(OPT) -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -DFU_VERSION='"$(VERSION)"' -Wall -Wextra -Wshadow \
             -Wno-unused-parameter -fopenmp -Ilib -MMD -MP \
             -ffp-contract=off \
             $(if $(ARCH),-march=$(ARCH)) $(CFLAGS)
# OpenMPI (Debian libopenmpi-dev): only lib/dist includes mpi.h. Expanded
# when used, so a fresh machine finds them after `deps` installed them.
MPI_CFLAGS = $(shell pkg-config --cflags ompi-c 2>/dev/null || mpicc --showme:compile 2>/dev/null)
MPI_LIBS   = $(shell pkg-config --libs ompi-c 2>/dev/null || mpicc --showme:link 2>/dev/null)
LDLIBS   = -ldnnl -lpng -ltiff -ljpeg -ldeflate -lz -lm -lpthread -Wl,--as-needed $(MPI_LIBS)
LDFLAGS  ?=

BUILD    := build
LIB      := $(BUILD)/libfundus.a
LIB_SRC  := $(sort $(shell find lib -name '*.c'))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
TOOL_SRC := $(filter-out tools/toolkit.c,$(sort $(wildcard tools/*.c)))
TOOLS    := $(TOOL_SRC:tools/%.c=bin/%)
UNIT_SRC := $(sort $(wildcard tests/unit/*.c))
UNITS    := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

# ---- GPU backend (lib/cuda, docs/gpu.md) ---------------------------------------
# USE_CUDA=1 compiles lib/cuda/*.cu with nvcc into the library (the "cuda"
# backend on cuDNN and cuBLAS) and links every program with them. Unset, it is
# on when $(CUDA_HOME) has nvcc and cuDNN's header is found; USE_CUDA=0/1 overrides.
CUDA_HOME ?= /usr/local/cuda
NVCC      ?= $(CUDA_HOME)/bin/nvcc
CUDNN_H   := $(firstword $(wildcard $(CUDA_HOME)/include/cudnn.h /usr/include/cudnn.h \
                                    /usr/include/x86_64-linux-gnu/cudnn.h))
ifndef USE_CUDA
  ifeq ($(wildcard $(NVCC)),)
    USE_CUDA := 0
    CUDA_OFF_WHY := USE_CUDA=0: no nvcc at $(NVCC); set CUDA_HOME
  else ifeq ($(CUDNN_H),)
    USE_CUDA := 0
    CUDA_OFF_WHY := USE_CUDA=0: no cudnn.h in $(CUDA_HOME)/include or /usr/include
  else
    USE_CUDA := 1
  endif
else ifneq ($(USE_CUDA),1)
  CUDA_OFF_WHY := built with USE_CUDA=$(USE_CUDA)
endif
ifneq ($(USE_CUDA),1)
  ifneq ($(filter all,$(or $(MAKECMDGOALS),all)),)
    $(info note: GPU backend off ($(CUDA_OFF_WHY)); the "cuda" backend is unavailable in this build)
  endif
endif

ifeq ($(USE_CUDA),1)
# Toolkit 13 dropped Volta (sm_70): a V100 needs CUDA 12.x, which still builds it.
# A100 (sm_80) and H100/H200 (sm_90) get machine code; PTX for compute_90 lets
# the driver compile for newer GPUs.
comma     := ,
CUDA_MAJOR := $(shell $(NVCC) --version 2>/dev/null | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
GPU_ARCH  ?= $(if $(filter 12,$(CUDA_MAJOR)),-gencode arch=compute_70$(comma)code=sm_70) \
             -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90
NVCCFLAGS ?= -O3 -g
# CUDA 12.8 and later warn that sm_70 is deprecated: building it is what the
# 12.x toolkit is for here (tests/gpu/cuda12-build.sh checks that build).
ALL_NVCCFLAGS = -std=c++17 -Ilib $(GPU_ARCH) -MMD -MP \
                $(if $(filter 12,$(CUDA_MAJOR)),-Wno-deprecated-gpu-targets) \
                -Xcompiler -Wall,-Wextra,-Wshadow,-Wno-unused-parameter $(NVCCFLAGS)
CUDA_LIBDIRS := $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/lib)
CU_SRC    := $(sort $(wildcard lib/cuda/*.cu))
LIB_OBJ   += $(CU_SRC:%.cu=$(BUILD)/%.o)
LDLIBS    += $(CUDA_LIBDIRS:%=-L%) $(CUDA_LIBDIRS:%=-Wl,-rpath,%) -lcudnn -lcublas -lcublasLt -lcudart -lstdc++

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	@echo '  NVCC $<'
	@$(NVCC) $(ALL_NVCCFLAGS) -c $< -o $@

# The .cu objects (and so every link) are rebuilt when the toolkit or the
# architectures change between builds: `make CUDA_HOME=<a CUDA 12>` after a
# CUDA 13 build must not keep objects without sm_70, linked to cudart 13.
CUDA_STAMP := $(CUDA_HOME) $(NVCC) $(CUDA_MAJOR) $(GPU_ARCH) $(NVCCFLAGS)
$(shell mkdir -p $(BUILD) && [ "$$(cat $(BUILD)/.cuda-toolkit 2>/dev/null)" = "$(CUDA_STAMP)" ] || \
        echo "$(CUDA_STAMP)" > $(BUILD)/.cuda-toolkit)
$(CU_SRC:%.cu=$(BUILD)/%.o): $(BUILD)/.cuda-toolkit

$(BUILD)/lib/nn/backend.o: ALL_CFLAGS += -DFU_HAVE_CUDA=1
else
$(BUILD)/lib/nn/backend.o: ALL_CFLAGS += -DFU_CUDA_OFF_WHY='"$(CUDA_OFF_WHY)"'
endif
# backend.c is compiled differently with and without the GPU backend: it is
# rebuilt when USE_CUDA (or why it is off) changes between builds.
$(shell mkdir -p $(BUILD) && [ "$$(cat $(BUILD)/.use-cuda 2>/dev/null)" = "$(USE_CUDA) $(CUDA_OFF_WHY)" ] || \
        echo "$(USE_CUDA) $(CUDA_OFF_WHY)" > $(BUILD)/.use-cuda)
$(BUILD)/lib/nn/backend.o: $(BUILD)/.use-cuda

# The GPU test (tests/gpu): the cuda backend against the reference, where a
# GPU is; not part of `make test`, which must pass on machines without one.
GPU_TEST := $(BUILD)/tests/gpu/test_cuda
.SECONDARY: $(GPU_TEST).o
-include $(GPU_TEST).d
$(GPU_TEST): $(BUILD)/tests/gpu/test_cuda.o $(LIB)
	@mkdir -p $(dir $@)
	@echo '  LD  $@'
	@$(CC) $(ALL_CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)

.PHONY: test-gpu
test-gpu: $(if $(filter 1,$(USE_CUDA)),$(GPU_TEST))
ifeq ($(USE_CUDA),1)
	@log=$$(mktemp); $(GPU_TEST) >$$log 2>&1; rc=$$?; cat $$log; \
	p=$$(grep -c '^ok ' $$log); f=$$(grep -c '^not ok ' $$log); s=$$(grep -c '^skip ' $$log); rm -f $$log; \
	if [ $$rc != 0 ] && [ $$f = 0 ]; then echo "not ok - $(GPU_TEST) exited with status $$rc"; f=1; fi; \
	echo "$$p passed, $$f failed, $$s skipped"; [ $$f = 0 ]
else
	@echo "skip - test-gpu: this build has no GPU backend ($(CUDA_OFF_WHY))"; echo "0 passed, 0 failed, 1 skipped"
endif

.DELETE_ON_ERROR:
# Objects made on the way to a tool or test are kept (no relinking churn).
.SECONDARY: $(TOOL_SRC:%.c=$(BUILD)/%.o) $(BUILD)/tools/toolkit.o $(UNIT_SRC:%.c=$(BUILD)/%.o)
.PHONY: all deps check-deps test demo install fuzz bench clean print-ldlibs
.DEFAULT_GOAL := all

all: check-deps $(TOOLS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo '  CC  $<'
	@$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/lib/dist/%.o: ALL_CFLAGS += $(MPI_CFLAGS)

$(LIB): $(LIB_OBJ)
	@rm -f $@
	@ar rcs $@ $^

bin/%: $(BUILD)/tools/%.o $(BUILD)/tools/toolkit.o $(LIB)
	@mkdir -p bin
	@echo '  LD  $@'
	@$(CC) $(ALL_CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(LIB)
	@mkdir -p $(dir $@)
	@echo '  LD  $@'
	@$(CC) $(ALL_CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# ---- dependencies --------------------------------------------------------------
# Build packages, then what the tests, the pipeline and the oracles need.
BUILD_PKGS := gcc make libc6-dev libpng-dev libtiff-dev libjpeg-dev libdeflate-dev zlib1g-dev libdnnl-dev \
              libopenmpi-dev openmpi-bin
TEST_PKGS  := gnuplot-nox python3 python3-numpy python3-opencv python3-torch python3-sklearn python3-pil \
              clang libclang-rt-14-dev g++
DEPS_STAMP := $(BUILD)/.deps-ok

check-deps: $(DEPS_STAMP)
$(DEPS_STAMP):
	@PKGS="$(BUILD_PKGS) $(TEST_PKGS)" sh .ci/deps.sh
	@mkdir -p $(BUILD) && touch $@
deps:
	@rm -f $(DEPS_STAMP)
	@$(MAKE) --no-print-directory check-deps

# ---- tests, demo, install ------------------------------------------------------
# `make test` and `make demo` build on every core (a minute serially, half
# that on two) unless -j was given: a make of their own, which also reads
# this file again once `deps` installed what the checks at its top look for.
BUILD_JOBS = $(if $(filter -j%,$(MAKEFLAGS)),,-j$(shell nproc 2>/dev/null || echo 2))
test: check-deps
	@$(MAKE) --no-print-directory $(BUILD_JOBS) all $(UNITS)
	@PYTHON=$(PYTHON) sh tests/run.sh

# The demo runs the whole DAG on synthetic data: preprocessing, the serial
# baseline and a 2-rank run (3 epochs of 336 images each, 224x224, the
# study's size), tables, charts: 3 min 39 s on this machine's 2 idle cores,
# 7 min 53 s with other jobs running beside it.
DEMO_VARS := DATA=synth SYNTH_COUNT=160 EPOCHS=3 SIZE=224 RESULTS=data/work/demo-results PLOTS=data/work/demo-plots
demo: check-deps
	@$(MAKE) --no-print-directory $(BUILD_JOBS) all
	@$(MAKE) --no-print-directory demo-run $(DEMO_VARS)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(TOOLS) $(DESTDIR)$(PREFIX)/bin/

FUZZ_SECONDS ?= 20
fuzz: all
	@FUZZ_SECONDS=$(FUZZ_SECONDS) sh tests/fuzz/run.sh

bench: all
	@PYTHON=$(PYTHON) sh bench/run.sh

clean:
	rm -rf $(BUILD) bin

# What programs built outside the Makefile (test drivers, bench) link with.
print-ldlibs:
	@echo $(LDLIBS)

include pipeline.mk

-include $(LIB_OBJ:.o=.d) $(TOOL_SRC:tools/%.c=$(BUILD)/tools/%.d) $(BUILD)/tools/toolkit.d \
         $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%.d)
