# One command runs the pipeline, one runs the tests; both install what they need first.
VENV ?= .venv
PYTHON ?= python3
ACTIVATE = . $(VENV)/bin/activate &&
MIRROR ?= ../shared/datasets/casting-product-train.zip
PORT ?= 8000
MLFLOW_PORT ?= 5000
MLFLOW_DIR ?=
HOST ?= 127.0.0.1

.PHONY: install run test results seeds bench serve mlflow-server clean

install: $(VENV)/.installed web/node_modules/.package-lock.json

web/node_modules/.package-lock.json: web/package-lock.json   # the TF.js runtime the browser bundle vendors
	npm ci --prefix web --no-audit --no-fund

$(VENV)/.installed: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.lock
	touch $@

run: install          ## the main job: dvc repro with params.yaml as it is
	$(ACTIVATE) dvc repro

test: install         ## unit tests, data tests (skipped without the mirror) and one end-to-end dvc repro
	$(ACTIVATE) python -m pytest -q --durations=25 tests

results: install      ## the README "Results" run: `dvc exp run` on the local Kaggle mirror, per-stage wall times
	$(ACTIVATE) python tools/timed_repro.py -S data.source=local -S data.local.path=$(MIRROR)   # keep MIRROR relative: dvc.lock records it

SEEDS ?= 5
seeds: install        ## train.seed 0..SEEDS-1 as queued dvc experiments up to the decision -> reports/seeds.{json,md}
	$(ACTIVATE) python tools/seeds.py --seeds $(SEEDS)

bench: install        ## the benchmark: whole pipeline on $(MIRROR), then SavedModel speed -> reports/benchmark.{json,md}
	$(ACTIVATE) python tools/bench.py --data $(MIRROR)
	$(ACTIVATE) python tools/bench.py --memory-scaling --data $(MIRROR)   # train stage: peak memory + images/s, data vs a 10x set, streamed vs in memory
	$(ACTIVATE) python tools/bench_predict.py --model models   # batch CLI: images/s and peak memory at 2,000 / 20,000 files
	$(ACTIVATE) python tools/bench_fingerprint.py --files 50000   # sources stage: fingerprint of a 50,000-file folder

serve: install        ## serve the browser bundle models/web on http://$(HOST):$(PORT)/ (after `make run`; HOST=0.0.0.0 for the network, with a warning)
	$(ACTIVATE) python -m commands.serve models/web --port $(PORT) --host $(HOST)

mlflow-server: install   ## a team MLflow server: PostgreSQL backend, proxied artifacts, on 127.0.0.1:$(MLFLOW_PORT) (Ctrl-C stops it)
	$(ACTIVATE) python tools/mlflow_server.py --port $(MLFLOW_PORT) $(if $(MLFLOW_DIR),--dir $(MLFLOW_DIR))

clean:
	rm -rf data/raw data/split data/shards models/* reports/* mlflow.db mlflow.db.lock mlruns
