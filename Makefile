# Two commands do everything on a fresh machine:
#   make demo   set up, then train a FactorVAE on procedural dSprites (~10 min on 2 CPU cores)
#   make test   set up, then run the test suite
VENV    ?= .venv
PYTHON  ?= python3
BIN      = $(VENV)/bin
DEMO_DIR ?= runs/demo
DEMO_STEPS ?= 4000

.PHONY: setup demo test bench clean-venv

setup: $(VENV)/.installed

# torch is pinned and installed first: a bare `torch` requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# resumed only from a checkpoint: a run stopped before its first one starts again (train does that)
demo: setup
	@if [ -f $(DEMO_DIR)/checkpoints/last.pt ]; then \
	  $(BIN)/factorvae train --out $(DEMO_DIR) --resume --steps $(DEMO_STEPS); \
	else \
	  $(BIN)/factorvae train --config configs/factorvae.yaml --steps $(DEMO_STEPS) \
	    --set train.image_every=1000 --set train.ckpt_every=1000 --out $(DEMO_DIR); \
	fi

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/train_speed.py

clean-venv:
	rm -rf $(VENV)
