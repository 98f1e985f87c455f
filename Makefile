# Two commands do everything on a fresh machine:
#   make demo   set up, then train a FactorVAE on procedural dSprites (11 min to 2 h on 2 CPU cores; README)
#   make test   set up, then run the test suite
VENV    ?= .venv
PYTHON  ?= python3
BIN      = $(VENV)/bin
DEMO_DIR ?= runs/demo
DEMO_STEPS ?= 4000

.PHONY: setup demo test bench reproduce clean-venv

setup: $(VENV)/.installed

# torch is pinned and installed first: a bare `torch` requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# Checkpoints every 250 steps; rerunning `make demo` after any interruption resumes from the last one.
# Threads: `factorvae train` picks them from the load average (DEMO_THREADS=N forces N).
DEMO_CKPT = $(DEMO_DIR)/checkpoints/last.pt
DEMO_THREADS ?=
DEMO_ARGS = $(if $(DEMO_THREADS),--threads $(DEMO_THREADS))

demo: setup
	@echo "demo: FactorVAE (gamma = 40, the paper's networks) on procedural dSprites, $(DEMO_STEPS) steps -> $(DEMO_DIR)"
	@echo "  checkpoint every 250 steps: interrupt at any time, run 'make demo' again to continue."
	@echo "  what to expect (a measured run, README): recon (nats per image) ~1,950 at step 100, a plateau"
	@echo "  near 510 from step 500 to ~1,300 (a blurry blob, one latent with most of the KL), then ~175 at 2,500 and ~160"
	@echo "  at 4,000; all 10 latents with KL > 0.1; in runs/demo/images/traversal_ref0.png (one row per"
	@echo "  latent) rows change size, elongation and shape, several factors per row, position hardly:"
	@echo "  not disentangled yet (the paper trains 300,000 steps)."
	@if [ -f $(DEMO_CKPT) ]; then \
	  $(BIN)/factorvae train --out $(DEMO_DIR) --resume --steps $(DEMO_STEPS) $(DEMO_ARGS); \
	else \
	  $(BIN)/factorvae train --config configs/factorvae.yaml --steps $(DEMO_STEPS) $(DEMO_ARGS) \
	    --set train.image_every=1000 --set train.ckpt_every=250 --out $(DEMO_DIR); \
	fi

test: setup
	$(BIN)/python -m pytest -q

# The paper's core 2D Shapes comparison at full budget on a CUDA machine (docs/reproduce.md).
# No install step where torch already imports (a bare GPU machine: PYTHONPATH=src); every method's
# runs train as one group, all groups at once. REPRO_CHECK: benchmarks/gpu_check.sh's
# OUTDIR/gpu_check.tar.gz (path and precision; projections). REPRO_MINUTES: a device-time budget,
# train.steps becomes the largest count that fits (printed first). E.g. the headline pair in 9 min:
#   make reproduce REPRO_SPEC=configs/sweeps/headline_pair.yaml REPRO_DIR=runs/headline \
#        REPRO_CHECK=gc/gpu_check.tar.gz REPRO_MINUTES=9
REPRO_SPEC    ?= configs/sweeps/paper_core_2dshapes.yaml
REPRO_DIR     ?= runs/paper_core
REPRO_CHECK   ?=
REPRO_MINUTES ?=
REPRO_ARGS    ?=

# a literal `make` for the set-up: with `$(MAKE)` in it, `make -n reproduce` would run this recipe
reproduce:
	@if $(PYTHON) -c 'import torch' 2>/dev/null; then py="$(PYTHON)"; \
	else make --no-print-directory setup && py="$(BIN)/python"; fi; \
	PYTHONPATH="$(CURDIR)/src$${PYTHONPATH:+:$$PYTHONPATH}" $$py -u benchmarks/reproduce.py --spec $(REPRO_SPEC) \
	  --out $(REPRO_DIR) $(if $(REPRO_CHECK),--check $(REPRO_CHECK)) $(if $(REPRO_MINUTES),--minutes $(REPRO_MINUTES)) \
	  -- $(REPRO_ARGS)

bench: setup
	$(BIN)/python benchmarks/train_speed.py

clean-venv:
	rm -rf $(VENV)
