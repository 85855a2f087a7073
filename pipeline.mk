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
#   make demo                             preprocessing of the synthetic set, with a summary

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

W := data/work/$(DATA)
SPLITS := train val test

# Write a parameter file now if its content differs (parse time, so `make -n`
# after a full run prints nothing). Only when a pipeline goal is asked for.
PIPELINE_GOALS := $(filter data data/% demo demo-data,$(MAKECMDGOALS))
ifneq ($(PIPELINE_GOALS),)
param = $(shell mkdir -p $(W) && printf '%s\n' '$(2)' | cmp -s - $(W)/$(1).params || printf '%s\n' '$(2)' > $(W)/$(1).params)
$(call param,source,DATA=$(DATA) SEED=$(SEED) SYNTH_COUNT=$(SYNTH_COUNT) SYNTH_SIZE=$(SYNTH_SIZE))
$(call param,split,RATIOS=$(RATIOS) SEED=$(SEED))
$(call param,resize,SIZE=$(SIZE))
$(call param,clahe,CLIP=$(CLIP) TILES=$(TILES) GAMMA=$(GAMMA) MEDIAN=$(MEDIAN))
$(call param,augment,AUGMENT=$(AUGMENT) SEED=$(SEED))
endif

.PHONY: data
data: $(SPLITS:%=$(W)/ready/%.shard)

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

# ---- demo -------------------------------------------------------------------------------
.PHONY: demo-data
demo-data: data
	@echo
	@echo "== demo: preprocessing of SYNTHETIC fundus images (fundus-synth, not real patients) =="
	@for s in $(SPLITS); do echo "-- $(W)/ready/$$s.shard"; bin/shard-info $(W)/ready/$$s.shard | sed 's/^/   /'; done
	@echo "Look at the images: bin/shard-unpack --dir /tmp/demo-train $(W)/ready/train.shard"
