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
              clang libclang-rt-14-dev
DEPS_STAMP := $(BUILD)/.deps-ok

check-deps: $(DEPS_STAMP)
$(DEPS_STAMP):
	@PKGS="$(BUILD_PKGS) $(TEST_PKGS)" sh .ci/deps.sh
	@mkdir -p $(BUILD) && touch $@
deps:
	@rm -f $(DEPS_STAMP)
	@$(MAKE) --no-print-directory check-deps

# ---- tests, demo, install ------------------------------------------------------
test: all $(UNITS)
	@PYTHON=$(PYTHON) sh tests/run.sh

# The demo runs the whole DAG on synthetic data: preprocessing, the serial
# baseline and a 2-rank run (3 epochs of 336 images each), tables, charts:
# 7 min 53 s on this 2-core machine with other jobs running beside it.
# (224x224, the study's size: below ~200 px oneDNN runs the dilated
# convolutions' weight gradients on its slow reference kernel.)
DEMO_VARS := DATA=synth SYNTH_COUNT=160 EPOCHS=3 SIZE=224 RESULTS=data/work/demo-results PLOTS=data/work/demo-plots
demo: all
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
