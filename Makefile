# One command runs the pipeline, one runs the tests; both install what they need first.
VENV ?= .venv
PYTHON ?= python3
ACTIVATE = . $(VENV)/bin/activate &&
MIRROR ?= ../shared/datasets/casting-product-train.zip

.PHONY: install run test results bench clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.lock
	touch $@

run: install          ## the main job: dvc repro with params.yaml as it is
	$(ACTIVATE) dvc repro

test: install         ## unit tests, data tests (skipped without the mirror) and one end-to-end dvc repro
	$(ACTIVATE) python -m pytest -q tests

results: install      ## the README "Results" run: the local Kaggle mirror, per-stage wall times
	$(ACTIVATE) python tools/timed_repro.py -S data.source=local -S data.local.path=$(MIRROR)

bench: install        ## the benchmark: whole pipeline on $(MIRROR), then SavedModel speed -> reports/benchmark.{json,md}
	$(ACTIVATE) python tools/bench.py --data $(MIRROR)

clean:
	rm -rf data/raw data/split models/* reports/* mlflow.db mlruns
