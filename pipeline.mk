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
#   make demo                             synthetic set: preprocessing, a short training run, metrics

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
PIPELINE_GOALS := $(filter data data/% demo demo-data $(RESULTS)/%,$(MAKECMDGOALS))
ifneq ($(PIPELINE_GOALS),)
$(eval $(call param,source,DATA=$(DATA) SEED=$(SEED) SYNTH_COUNT=$(SYNTH_COUNT) SYNTH_SIZE=$(SYNTH_SIZE)))
$(eval $(call param,split,RATIOS=$(RATIOS) SEED=$(SEED)))
$(eval $(call param,resize,SIZE=$(SIZE)))
$(eval $(call param,clahe,CLIP=$(CLIP) TILES=$(TILES) GAMMA=$(GAMMA) MEDIAN=$(MEDIAN)))
$(eval $(call param,augment,AUGMENT=$(AUGMENT) SEED=$(SEED)))
$(eval $(call param,train,EPOCHS=$(EPOCHS) BATCH=$(BATCH) SEED=$(SEED)))
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
# One run per results file; the run's folder keeps its log, predictions and weights.
READY := $(SPLITS:%=$(W)/ready/%.shard)
TRAIN_ARGS = --train $(W)/ready/train.shard --val $(W)/ready/val.shard --test $(W)/ready/test.shard \
             --epochs $(EPOCHS) --batch $(BATCH) --seed $(SEED) --dataset $(DATA) --backend cpu --quiet

$(RESULTS)/cpu1.csv: $(READY) $(W)/train.params bin/cnn-train
	@mkdir -p $(@D)
	rm -rf $(W)/runs/cpu1
	bin/cnn-train $(TRAIN_ARGS) --threads 1 --config cpu1 --out $(W)/runs/cpu1
	cp $(W)/runs/cpu1/results.csv $@.tmp && mv $@.tmp $@

# ---- demo -------------------------------------------------------------------------------
.PHONY: demo-data
demo-data: data $(RESULTS)/cpu1.csv
	@echo
	@echo "== demo on SYNTHETIC fundus images (fundus-synth, not real patients) =="
	@for s in $(SPLITS); do echo "-- $(W)/ready/$$s.shard"; bin/shard-info $(W)/ready/$$s.shard | sed 's/^/   /'; done
	@echo "-- training log ($(EPOCHS) epochs, 1 thread): $(W)/runs/cpu1/log.csv"
	@sed 's/^/   /' $(W)/runs/cpu1/log.csv
	@echo "-- test split, best epoch's weights:"
	@bin/metrics-report $(W)/runs/cpu1/predictions-test.csv | sed 's/^/   /'
	@echo "Results row: $(RESULTS)/cpu1.csv.  Look at the images: bin/shard-unpack --dir /tmp/demo-train $(W)/ready/train.shard"
