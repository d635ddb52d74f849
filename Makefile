# `make run` and `make test` are the whole set-up: each creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: run test lint format bench demo install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# one stamp per dependency set, redone when pyproject.toml or constraints.txt change
$(VENV)/.web: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[web,openvino]'
	touch $@

$(VENV)/.all: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[train,web,test,openvino,ray]'
	touch $@ $(VENV)/.web

install: $(VENV)/.all

# The web application on the bundled model (serving needs no PyTorch): http://127.0.0.1:5000
run: $(VENV)/.web
	$(BIN)/hematovision serve --host $(HOST) --port $(PORT) --workers 2

# ruff: lint rules and formatting are configured in pyproject.toml
lint: $(VENV)/.all
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.all
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# -rs lists every skip with its reason; in CI (CI=true) a test that lacks data or Chromium fails
test: lint
	$(BIN)/python -m pytest -q -rs --durations=10

# The original design's demo, end to end: simulate data, train, evaluate, HTML report.
demo: $(VENV)/.all
	$(BIN)/hematovision data synth demo/data --classes lymphocyte,neutrophil --per-class 50 --overwrite
	$(BIN)/hematovision train --data demo/data --arch seed-cnn --epochs 5 --out demo/run --overwrite
	$(BIN)/hematovision evaluate --model demo/run --data demo/data --split test
	@echo "HTML report: demo/run/report.html"

bench: $(VENV)/.all
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_web.py
	$(BIN)/python benchmarks/bench_smear.py
	$(BIN)/python benchmarks/bench_ray.py
	$(BIN)/python benchmarks/bench_slide.py

clean:
	rm -rf $(VENV) demo hematovision-data .pytest_cache
