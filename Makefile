# `make run` and `make test` are the whole set-up: each creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
DEMO   := demo

.PHONY: run test bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# one stamp per dependency set, redone when pyproject.toml or constraints.txt change
$(VENV)/.train-test: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[train,test]'
	touch $@

install: $(VENV)/.train-test

test: $(VENV)/.train-test
	$(BIN)/python -m pytest -q --durations=10

# Until the web application exists: the demo of the original design, end to end.
run: $(VENV)/.train-test
	$(BIN)/hematovision data synth $(DEMO)/data --classes lymphocyte,neutrophil --per-class 50 --overwrite
	$(BIN)/hematovision train --data $(DEMO)/data --arch seed-cnn --epochs 5 --out $(DEMO)/run --overwrite
	$(BIN)/hematovision evaluate --model $(DEMO)/run --data $(DEMO)/data --split test
	@echo "HTML report: $(DEMO)/run/report.html"

bench: $(VENV)/.train-test
	$(BIN)/python benchmarks/bench_training.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
