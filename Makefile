# Two-stage TFRS movie recommender. `make help` lists the targets.
#
# Data: RAW_DATA (or $TFRS_RAW_DATA) is a directory with ml-1m/ (or
# ml-1m.zip) and melu/movies_extrainfos.dat; without it the official files
# are downloaded. DATA_DIR (or $TFRS_DATA_DIR) is the TFDS data directory.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-setup-cfg
RAW_DATA ?= $(TFRS_RAW_DATA)
DATA_DIR ?= $(TFRS_DATA_DIR)
RUNS ?= runs
PORT ?= 8000
TB_HOST ?= 127.0.0.1
TB_PORT ?= 6006
RAW_FLAG := $(if $(RAW_DATA),--raw_data=$(RAW_DATA),)
DATA_FLAG := $(if $(DATA_DIR),--data_dir=$(DATA_DIR),)
CLI := $(BIN)/tfrs-pipeline

.PHONY: help install test data eda train train-retrieval train-sources train-ranking tensorboard bench serve clean

help:
	@echo "make install          create .venv and install (skipped when current with setup.cfg)"
	@echo "make test             run the test suite"
	@echo "make data             build the TFDS dataset (RAW_DATA=dir or download)"
	@echo "make eda              exploratory HTML report -> reports/eda/index.html"
	@echo "make train            everything serve needs, in order -> $(RUNS)/{retrieval,sources,ranking}"
	@echo "make train-retrieval  train, evaluate, export retrieval -> $(RUNS)/retrieval"
	@echo "make train-sources    fit the item-to-item and popularity sources -> $(RUNS)/sources"
	@echo "make train-ranking    train the ranker on candidate lists (needs retrieval) -> $(RUNS)/ranking"
	@echo "make tensorboard      TensorBoard over $(RUNS)"
	@echo "make bench            benchmark report -> bench/report.{json,md}"
	@echo "make serve            HTTP service on PORT=$(PORT)"

# Idempotent: reinstalls only when setup.cfg changed since the last install.
install:
	@if [ -f $(STAMP) ] && [ "$$(sha256sum setup.cfg | cut -d' ' -f1)" = "$$(cat $(STAMP))" ]; then \
	  echo "install: $(VENV) is current with setup.cfg"; \
	else \
	  set -e; \
	  $(PYTHON) -m venv $(VENV); \
	  $(BIN)/pip install --quiet --upgrade pip; \
	  $(BIN)/pip install --quiet -e '.[test]'; \
	  sha256sum setup.cfg | cut -d' ' -f1 > $(STAMP); \
	  echo "install: done"; \
	fi
	@bash scripts/install_chromium.sh

test: install
	$(BIN)/python -m pytest -q --durations=10 -n 2 --dist loadgroup

data: install
	$(CLI) data prepare $(RAW_FLAG) $(DATA_FLAG)
	$(CLI) data describe $(RAW_FLAG) $(DATA_FLAG)

eda: install
	$(CLI) eda $(RAW_FLAG) --out_dir=reports/eda

train: install
	$(CLI) train all $(RAW_FLAG) $(DATA_FLAG) --runs=$(RUNS)

train-retrieval: install
	$(CLI) train retrieval $(RAW_FLAG) $(DATA_FLAG) --run_dir=$(RUNS)/retrieval

train-sources: install
	$(CLI) train sources $(RAW_FLAG) $(DATA_FLAG) --sources_run=$(RUNS)/sources

train-ranking: install
	$(CLI) train ranking $(RAW_FLAG) $(DATA_FLAG) --run_dir=$(RUNS)/ranking --retrieval_run=$(RUNS)/retrieval

# Loopback only by default, as `serve`; TB_HOST=0.0.0.0 exposes it.
tensorboard: install
	@echo "TensorBoard over $(RUNS): http://$(TB_HOST):$(TB_PORT)/"
	$(BIN)/tensorboard --logdir $(RUNS) --host $(TB_HOST) --port $(TB_PORT)

bench: install
	$(CLI) bench $(RAW_FLAG) $(DATA_FLAG) --out_dir=bench

serve: install
	$(CLI) serve --runs=$(RUNS) --port=$(PORT)

clean:
	rm -rf $(RUNS) reports bench/runs bench/serve_runs .pytest_cache
