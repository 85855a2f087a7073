# The experiment DAG (included by the Makefile). Every arrow is a file:
#
#   source --shard-pack|fundus-synth--> raw.shard --shard-split--> split/{train,val,test}.shard
#     --fundus-resize--> resized/*.shard --fundus-clahe--> clahe/*.shard
#     --fundus-augment (train only)--> ready/train.shard   (ready/{val,test} = clahe output)
#
# Stage parameters live in per-stage parameter files (data/work/DATA/*.params),
# rewritten only when their content changes, and each stage depends on its own
# file: changing CLIP reruns CLAHE and what follows, nothing before it. Tools
# are prerequisites too, so a rebuilt tool reruns its stage.
#
#   make data DATA=synth|acrima|smdg      the ready shards
#   make results/cpu1.csv                 the serial baseline: 1 process x 1 thread
#   make results/cpux2.csv                2 MPI ranks x 1 thread (cpuxNtT: N ranks x T threads)
#   make tables charts                    scaling tables, the model, summary.md; plots/*.png|svg
#   make study DATA=acrima                the study's grid, as far as this machine can run it
#   make demo                             synthetic set: the whole DAG, short runs
# docs/experiments.md tells the whole story.

DATA        ?= synth
SEED        ?= 42
SIZE        ?= 224
CLIP        ?= 2.0
TILES       ?= 8
GAMMA       ?= 1.2
MEDIAN      ?= 3
AUGMENT     ?= 0=2,1=4
RATIOS      ?= 70,15,15
SYNTH_COUNT ?= 240
SYNTH_SIZE  ?= 512
ACRIMA_DIR  ?= ../shared/data/acrima
SMDG_DIR    ?= data/smdg
EPOCHS      ?= 10
BATCH       ?= 32
RESULTS     ?= results
PLOTS       ?= plots
BASELINE    ?= cpu1

WORK        ?= data/work
W := $(WORK)/$(DATA)
SPLITS := train val test

# Each stage's parameters go to a file, written at parse time when its content
# differs, so the file's date says when they last changed. Under `make -n`
# nothing is written: a changed file only gets a recipe that says so, so a dry
# run shows what would rerun and changes nothing. Only for pipeline goals.
DRY_RUN := $(if $(findstring n,$(filter-out -% %=%,$(firstword $(MAKEFLAGS)))),yes)
define param
ifneq ($$(file < $(W)/$(1).params),$(2))
ifeq ($(DRY_RUN),yes)
$(W)/$(1).params: pipeline-force
	@echo "$$@: parameters changed"
else
$$(shell mkdir -p $(W))
$$(file > $(W)/$(1).params,$(2))
endif
endif
endef
pipeline-force:
PIPELINE_GOALS := $(filter data data/% demo demo-run study tables charts $(RESULTS)/% $(PLOTS)/%,$(MAKECMDGOALS))
ifneq ($(PIPELINE_GOALS),)
$(eval $(call param,source,DATA=$(DATA) SEED=$(SEED) SYNTH_COUNT=$(SYNTH_COUNT) SYNTH_SIZE=$(SYNTH_SIZE)))
$(eval $(call param,split,RATIOS=$(RATIOS) SEED=$(SEED)))
$(eval $(call param,resize,SIZE=$(SIZE)))
$(eval $(call param,clahe,CLIP=$(CLIP) TILES=$(TILES) GAMMA=$(GAMMA) MEDIAN=$(MEDIAN)))
$(eval $(call param,augment,AUGMENT=$(AUGMENT) SEED=$(SEED)))
$(eval $(call param,train,EPOCHS=$(EPOCHS) BATCH=$(BATCH) SEED=$(SEED)))
$(eval $(call param,mp,MP_STAGES=$(MP_STAGES) MICRO_BATCHES=$(MICRO_BATCHES)))
endif

.PHONY: data
# Every stage's outputs are named here, so Make keeps them (they are not
# intermediate files) and a changed parameter reruns only its own stage on.
STAGE_OUTPUTS := $(foreach d,split resized clahe ready,$(SPLITS:%=$(W)/$(d)/%.shard))
data: $(STAGE_OUTPUTS)

# ---- source -> raw.shard ----------------------------------------------------------
ifeq ($(DATA),synth)
$(W)/raw.shard: $(W)/source.params bin/fundus-synth
	bin/fundus-synth --quiet --count $(SYNTH_COUNT) --size $(SYNTH_SIZE) --seed $(SEED) -o $@
else ifeq ($(DATA),acrima)
$(W)/raw.shard: $(W)/source.params bin/shard-pack $(ACRIMA_DIR)/labels.csv
	bin/shard-pack --quiet --labels $(ACRIMA_DIR)/labels.csv -o $@
else ifeq ($(DATA),smdg)
$(W)/raw.shard: $(W)/source.params bin/shard-pack
	bin/shard-pack --quiet $(SMDG_DIR) -o $@
else
$(error DATA=$(DATA): unknown dataset (synth, acrima, smdg))
endif

# ---- split (SMDG comes split; the others are split 70/15/15, stratified) -------------
ifeq ($(DATA),smdg)
SPLIT_HOW := --by-field
else
SPLIT_HOW := --ratios $(RATIOS) --seed $(SEED) --stratify
endif
$(SPLITS:%=$(W)/split/%.shard) &: $(W)/raw.shard $(W)/split.params bin/shard-split
	bin/shard-split --quiet $(SPLIT_HOW) -o $(W)/split $(W)/raw.shard

# ---- per-image stages -----------------------------------------------------------------
$(W)/resized/%.shard: $(W)/split/%.shard $(W)/resize.params bin/fundus-resize
	@mkdir -p $(@D)
	bin/fundus-resize --quiet --size $(SIZE) -o $@ $<

$(W)/clahe/%.shard: $(W)/resized/%.shard $(W)/clahe.params bin/fundus-clahe
	@mkdir -p $(@D)
	bin/fundus-clahe --quiet --clip $(CLIP) --tiles $(TILES) --gamma $(GAMMA) --median $(MEDIAN) -o $@ $<

$(W)/ready/train.shard: $(W)/clahe/train.shard $(W)/augment.params bin/fundus-augment
	@mkdir -p $(@D)
	bin/fundus-augment --quiet --seed $(SEED) --per-class $(AUGMENT) -o $@ $<

$(W)/ready/val.shard $(W)/ready/test.shard: $(W)/ready/%.shard: $(W)/clahe/%.shard
	@mkdir -p $(@D)
	cp $< $@.tmp && mv $@.tmp $@

# ---- experiments ----------------------------------------------------------------------
# A results name says what ran (DESIGN.md section 6); one run per results file,
# its folder $(W)/runs/NAME keeps the log, predictions and weights:
#   cpu1, cpu1tT               one process, 1 or T threads
#   cpuxN, cpuxNtT             N MPI ranks ($(MPI_CMD) N), 1 or T threads each
#   ..._bf16                   bf16 compute (cnn-train --amp bf16)
#   ..._mp                     model parallel: MP_STAGES stages per rank, MICRO_BATCHES micro-batches
#                              (cnn-train --model-parallel, --micro-batches); on the CPU the
#                              stages are threads sharing the rank's threads
#   GPUxN[_amp|_bf16][_mp]     N GPUs of one model: v100x4_amp, h100x1_amp, h100x2_amp_mp; with
#                              _mp, N / MP_STAGES ranks of MP_STAGES GPUs each, or on one GPU
#                              the stages share it (--allow-shared-gpu)
# Runs time themselves: run them one at a time (make -j1), not beside other work.
# CONV_ALGOS=FILE: GPU runs use measured convolution engines, recorded in
# FILE by the first run that meets a shape and taken from it by every later
# one (cnn-train --conv-algos; docs/gpu.md); empty, the default: cuDNN's
# heuristics. Not a prerequisite: a run that records a new shape does not
# make the others stale (their engines are in the file as used).
MP_STAGES     ?= 2
MICRO_BATCHES ?= 4
CONV_ALGOS    ?=
MPI_ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-run-as-root)
MPI_CMD ?= mpirun $(MPI_ROOT_FLAG) --oversubscribe -np

# $(call num,S): S when it is a positive number without leading zeros, else empty.
no_digits = $(subst 0,,$(subst 1,,$(subst 2,,$(subst 3,,$(subst 4,,$(subst 5,,$(subst 6,,$(subst 7,,$(subst 8,,$(subst 9,,$(1)))))))))))
num = $(if $(and $(1),$(filter-out 0%,$(1)),$(if $(call no_digits,$(1)),,ok)),$(1))

# CPU names, by what follows "cpu" (1t2, x4, x4t2_bf16): ranks and threads, empty when malformed.
cpu_base = $(firstword $(subst _, ,$(1)))
cpu_flags = $(wordlist 2,9,$(subst _, ,$(1)))
cpu_parts = $(subst t, ,$(call cpu_base,$(1)))
cpu_shape_ok = $(if $(findstring tt,$(1))$(filter t% %t,$(call cpu_base,$(1)))$(word 3,$(call cpu_parts,$(1)))$(filter-out bf16 mp,$(call cpu_flags,$(1))),,ok)
cpu_ranks = $(if $(call cpu_shape_ok,$(1)),$(if $(filter x%,$(1)),$(call num,$(patsubst x%,%,$(firstword $(call cpu_parts,$(1))))),$(filter 1,$(firstword $(call cpu_parts,$(1))))))
cpu_threads = $(if $(word 2,$(call cpu_parts,$(1))),$(call num,$(word 2,$(call cpu_parts,$(1)))),1)

# GPU names (v100x4_amp_mp): the model (v100), the count (4), the flags (amp mp).
gpu_head = $(firstword $(subst _, ,$(1)))
gpu_flags = $(wordlist 2,9,$(subst _, ,$(1)))
gpu_count = $(call num,$(lastword $(subst x, ,$(call gpu_head,$(1)))))
gpu_model = $(patsubst %x$(call gpu_count,$(1)),%,$(call gpu_head,$(1)))
gpu_name_ok = $(and $(call gpu_count,$(1)),$(filter-out x%,$(call gpu_head,$(1))),$(if $(filter-out amp bf16 mp,$(call gpu_flags,$(1))),,ok))

# What this machine's NVIDIA GPUs are ("1 x NVIDIA H100 80GB HBM3"), and how
# many of them are of a model (v100 matches "Tesla V100-SXM2-16GB"). A failing
# nvidia-smi (no driver) prints its complaint on stdout: it counts as no GPU.
GPU_NAMES = { names=$$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null) && printf '%s\n' "$$names"; }
gpu_have = $(shell $(GPU_NAMES) | sort | uniq -c | sed 's/^ *\([0-9]*\) */\1 x /' | paste -sd, - | sed 's/,/, /g')
gpu_matching = $(shell $(GPU_NAMES) | grep -icE '(^|[^a-z0-9])$(1)([^a-z0-9]|$$)')
upper = $(shell echo '$(1)' | tr a-z A-Z)
# With the GPUs there, a model-parallel count that does not split into stages.
gpu_why = $(if $(shell [ "$(call gpu_matching,$(2))" -ge $(3) ] && echo yes),$(if $(filter mp,$(4)),$(call mp_why,$(1),$(3))),$(1): needs $(3) x $(call upper,$(2)); this machine has $(or $(gpu_have),no NVIDIA GPU))
mp_why = $(if $(shell [ $(2) = 1 ] || [ $$(( $(2) % $(MP_STAGES) )) = 0 ] && echo yes),,$(1): $(2) GPUs do not make ranks of MP_STAGES=$(MP_STAGES) stages)
# The cnn-train options of the flags (bf16, mp; amp for GPUs).
mp_args = $(if $(filter mp,$(1)),--model-parallel $(MP_STAGES) --micro-batches $(MICRO_BATCHES) )

# $(call result_why,PATH): why results PATH cannot be made here; empty when it can.
RESULT_TABLES := $(RESULTS)/cpu-scaling.csv $(RESULTS)/gpu-scaling.csv $(RESULTS)/scaling-model.csv
bad_name = $(1): not a results name: cpu1, cpu1tT, cpuxN, cpuxNtT (N ranks x T threads, optional _bf16, _mp) or GPUxN[_amp|_bf16][_mp] (v100x4_amp)
name_why = $(if $(filter cpu%,$(2)),$(if $(and $(call cpu_ranks,$(3)),$(call cpu_threads,$(3))),,$(call bad_name,$(1))),$(if $(call gpu_name_ok,$(2)),$(call gpu_why,$(1),$(call gpu_model,$(2)),$(call gpu_count,$(2)),$(call gpu_flags,$(2))),$(call bad_name,$(1))))
result_why = $(if $(filter $(RESULT_TABLES),$(1)),,$(call name_why,$(1),$(basename $(notdir $(1))),$(patsubst cpu%,%,$(basename $(notdir $(1))))))

# Named on the command line: refused before any data are made.
$(foreach g,$(filter $(RESULTS)/%.csv,$(MAKECMDGOALS)),$(if $(call result_why,$(g)),$(error $(call result_why,$(g)))))

READY := $(SPLITS:%=$(W)/ready/%.shard)
TRAIN_ARGS = --train $(W)/ready/train.shard --val $(W)/ready/val.shard --test $(W)/ready/test.shard \
             --epochs $(EPOCHS) --batch $(BATCH) --seed $(SEED) --dataset $(DATA) --backend cpu --quiet

# cpu1 and cpu1tT run as one process; cpuxN... under $(MPI_CMD) N. Only
# model-parallel runs (_mp) depend on the model-parallel settings.
.SECONDEXPANSION:
mp_params = $(if $(filter mp,$(subst _, ,$(1))),$(W)/mp.params)
$(RESULTS)/cpu%.csv: $(READY) $(W)/train.params $$(call mp_params,$$*) bin/cnn-train
	$(if $(call result_why,$@),@echo '$(call result_why,$@)' >&2; exit 1)
	@mkdir -p $(@D)
	rm -rf $(W)/runs/cpu$*
	$(if $(filter x%,$*),$(MPI_CMD) $(call cpu_ranks,$*) )bin/cnn-train $(TRAIN_ARGS) --threads $(call cpu_threads,$*) \
	  $(if $(filter bf16,$(call cpu_flags,$*)),--amp bf16 )$(call mp_args,$(call cpu_flags,$*))--config cpu$* \
	  --out $(W)/runs/cpu$*
	cp $(W)/runs/cpu$*/results.csv $@.tmp && mv $@.tmp $@

# Every other name: a GPU configuration (one rank per GPU, the cuda backend;
# _amp = fp16 autocast with loss scaling, as the study's AMP; _bf16), or a
# mistake, which is refused before anything runs.
# With _mp, each rank drives MP_STAGES GPUs; on one GPU the stages share it.
gpu_ranks = $(if $(filter mp,$(call gpu_flags,$(1))),$(if $(filter 1,$(call gpu_count,$(1))),1,$(shell echo $$(( $(call gpu_count,$(1)) / $(MP_STAGES) )))),$(call gpu_count,$(1)))
$(RESULTS)/%.csv: $(READY) $(W)/train.params $$(call mp_params,$$*) bin/cnn-train
	$(if $(call result_why,$@),@echo '$(call result_why,$@)' >&2; exit 1)
	@mkdir -p $(@D)
	rm -rf $(W)/runs/$*
	$(if $(filter-out 1,$(call gpu_ranks,$*)),$(MPI_CMD) $(call gpu_ranks,$*) )bin/cnn-train \
	  $(subst --backend cpu,--device cuda,$(TRAIN_ARGS)) $(if $(CONV_ALGOS),--conv-algos $(CONV_ALGOS) )\
	  $(if $(filter amp,$(call gpu_flags,$*)),--amp fp16 )$(if $(filter bf16,$(call gpu_flags,$*)),--amp bf16 )$(call mp_args,$(call gpu_flags,$*))$(if $(and $(filter mp,$(call gpu_flags,$*)),$(filter 1,$(call gpu_count,$*))),--allow-shared-gpu )--config $* \
	  --out $(W)/runs/$*
	cp $(W)/runs/$*/results.csv $@.tmp && mv $@.tmp $@

# ---- tables: speedup and efficiency against the baseline, the scaling model -----------
# From the results files there are (a missing baseline is run first). The
# listing file changes when a results file comes or goes, so the tables follow.
RUN_RESULTS = $(sort $(RESULTS)/$(BASELINE).csv $(filter-out $(RESULT_TABLES),$(wildcard $(RESULTS)/*.csv)))
CPU_RESULTS = $(sort $(RESULTS)/$(BASELINE).csv $(filter $(RESULTS)/cpu%,$(RUN_RESULTS)))
GPU_RESULTS = $(sort $(RESULTS)/$(BASELINE).csv $(filter-out $(RESULTS)/cpu%,$(RUN_RESULTS)))
define listing
ifneq ($$(file < $(1)),$(2))
ifeq ($(DRY_RUN),yes)
$(1): pipeline-force
	@echo "$$@: the set of results changed"
else
$$(shell mkdir -p $(dir $(1)))
$$(file > $(1),$(2))
endif
endif
endef
ifneq ($(filter tables charts $(RESULTS)/% $(PLOTS)/%,$(MAKECMDGOALS)),)
$(eval $(call listing,$(RESULTS)/.runs,$(notdir $(RUN_RESULTS))))
endif

.PHONY: tables charts
tables: $(RESULT_TABLES) $(RESULTS)/summary.md

$(RESULTS)/cpu-scaling.csv: $(CPU_RESULTS) $(RESULTS)/.runs bin/metrics-report
	bin/metrics-report --quiet --table --baseline $(BASELINE) -o $@ $(CPU_RESULTS)
$(RESULTS)/gpu-scaling.csv: $(GPU_RESULTS) $(RESULTS)/.runs bin/metrics-report
	bin/metrics-report --quiet --table --baseline $(BASELINE) -o $@ $(GPU_RESULTS)
$(RESULTS)/scaling-model.csv: $(RUN_RESULTS) $(RESULTS)/.runs bin/metrics-report
	bin/metrics-report --quiet --predict --csv --baseline $(BASELINE) -o $@ $(RUN_RESULTS)
$(RESULTS)/summary.md: $(RUN_RESULTS) $(RESULTS)/.runs bin/metrics-report
	bin/metrics-report --quiet --summary --baseline $(BASELINE) -o $@ $(RUN_RESULTS)

# ---- charts: plots/NAME.gp -> $(PLOTS)/NAME.png and .svg ----------------------------------
# The runs' own curves come from their folders ($(W)/runs/NAME: log.csv, and
# the ROC points of predictions-test.csv).
CHARTS := time speedup efficiency accuracy curves roc
RUN_DIRS = $(patsubst %/log.csv,%,$(wildcard $(foreach f,$(RUN_RESULTS),$(W)/runs/$(basename $(notdir $(f)))/log.csv)))
RUN_ROCS = $(patsubst %/predictions-test.csv,%/roc-test.csv,$(wildcard $(RUN_DIRS:%=%/predictions-test.csv)))
GP_VARS = cpu='$(RESULTS)/cpu-scaling.csv'; gpu='$(RESULTS)/gpu-scaling.csv'; model='$(RESULTS)/scaling-model.csv'; \
          baseline='$(BASELINE)'; runs='$(RUN_DIRS)'; rocs='$(RUN_ROCS)'; data='$(DATA)'
charts: $(foreach c,$(CHARTS),$(PLOTS)/$(c).png $(PLOTS)/$(c).svg)

$(foreach c,time speedup efficiency accuracy,$(PLOTS)/$(c).png $(PLOTS)/$(c).svg): $(RESULT_TABLES)
$(PLOTS)/curves.png $(PLOTS)/curves.svg: $(RUN_DIRS:%=%/log.csv) $(RESULTS)/.runs
$(PLOTS)/roc.png $(PLOTS)/roc.svg: $(RUN_ROCS) $(RESULTS)/.runs

# gnuplot writes NAME.tmp.EXT, renamed when whole.
gnuplot_to = @mkdir -p $(@D) && gnuplot -e "term='$(1)'; out='$(basename $@).tmp.$(1)'; $(GP_VARS)" $< \
             && mv $(basename $@).tmp.$(1) $@ || { rm -f $(basename $@).tmp.$(1); exit 1; }
$(PLOTS)/%.png: plots/%.gp plots/common.gp
	$(call gnuplot_to,png)
$(PLOTS)/%.svg: plots/%.gp plots/common.gp
	$(call gnuplot_to,svg)

$(W)/runs/%/roc-test.csv: $(W)/runs/%/predictions-test.csv bin/metrics-report
	bin/metrics-report --quiet --roc $@ $< >/dev/null

# ---- the study's grid and the demo ----------------------------------------------------------
# The study ran 1-32 CPU workers and 1-4 GPUs. Here: each configuration this
# machine can run, one at a time; each other one skipped with a line saying
# why. A CPU run needs ranks x threads <= CORES (override: CORES=32).
STUDY_CPU ?= cpu1 cpu1t2 cpux2 cpux2t2 cpux4 cpux4t2 cpux8 cpux16 cpux32
STUDY_GPU ?= v100x1 v100x2 v100x4 v100x1_amp v100x2_amp v100x4_amp v100x2_amp_mp
CORES     ?= $(shell nproc)
cpu_fits = $(shell [ $$(( $(call cpu_ranks,$(1)) * $(call cpu_threads,$(1)) )) -le $(CORES) ] && echo yes)
study_why = $(if $(filter cpu%,$(1)),$(if $(call cpu_fits,$(patsubst cpu%,%,$(1))),,$(1): skipped: needs $(call cpu_ranks,$(patsubst cpu%,%,$(1))) x $(call cpu_threads,$(patsubst cpu%,%,$(1))) cores$(,) this machine has $(CORES) (CORES=N to run it anyway)),$(call result_why,$(1)))
, := ,
STUDY_RUNS = $(foreach c,$(STUDY_CPU) $(STUDY_GPU),$(if $(call study_why,$(c)),,$(RESULTS)/$(c).csv))

.PHONY: study demo-run
study:
	@$(foreach c,$(STUDY_CPU) $(STUDY_GPU),$(if $(call study_why,$(c)),echo '$(patsubst $(RESULTS)/%.csv,%,$(call study_why,$(c)))';))
	@$(MAKE) --no-print-directory -j1 data $(STUDY_RUNS)
	@$(MAKE) --no-print-directory tables charts
	@echo; cat $(RESULTS)/summary.md
	@echo; echo "Charts: $(foreach c,$(CHARTS),$(PLOTS)/$(c).png) (and .svg)"

# The demo (make demo sets the sizes): preprocessing, the serial baseline and
# a 2-rank run, one at a time, then tables and charts.
demo-run:
	@$(MAKE) --no-print-directory -j1 data $(RESULTS)/cpu1.csv $(RESULTS)/cpux2.csv
	@$(MAKE) --no-print-directory tables charts
	@echo
	@echo "== demo on SYNTHETIC fundus images (fundus-synth, not real patients): the times are real, the accuracies mean nothing =="
	@for s in $(SPLITS); do printf -- '-- %s: ' $(W)/ready/$$s.shard; bin/shard-info $(W)/ready/$$s.shard | grep -m1 '^records'; done
	@echo
	@cat $(RESULTS)/summary.md
	@echo
	@echo "Charts: $(foreach c,$(CHARTS),$(PLOTS)/$(c).png) (and .svg)"
	@echo "Runs (log.csv, predictions, model.safetensors): $(W)/runs/cpu1 $(W)/runs/cpux2.  Results: $(RESULTS)/"
