# One command runs the pipeline, one runs the tests; both install what they need first.
VENV ?= .venv
PYTHON ?= python3
ACTIVATE = . $(VENV)/bin/activate &&
MIRROR ?= ../shared/datasets/casting-product-train.zip
PORT ?= 8000
MLFLOW_PORT ?= 5000
MLFLOW_DIR ?=
HOST ?= 127.0.0.1

.PHONY: install system-deps run test status results seeds bench serve mlflow-server clean

# Everything the pipeline needs: the Python venv (requirements.lock), the system packages (Chromium, Node.js/npm;
# installed when run as root on Debian/Ubuntu, else the one `sudo apt-get install` line and a stop) and the
# TF.js runtime the browser bundle vendors. The stamps hold the lock file they were made from, so a fresh clone
# sharing a venv (VENV=...) does not reinstall it.
install: $(VENV)/.installed system-deps web/node_modules/.installed

$(VENV)/.installed: requirements.lock
	@if cmp -s requirements.lock $@; then touch $@; else \
	  $(PYTHON) -m venv $(VENV) && $(VENV)/bin/pip install -q --upgrade pip && \
	  $(VENV)/bin/pip install -q -r requirements.lock && \
	  cp requirements.lock $@; fi

system-deps: $(VENV)/.installed
	$(VENV)/bin/python tools/system_deps.py $(if $(POSTGRES),--postgres)

web/node_modules/.installed: web/package-lock.json | system-deps
	@if cmp -s web/package-lock.json $@; then touch $@; else \
	  npm ci --prefix web --no-audit --no-fund && cp web/package-lock.json $@; fi

run: install          ## the main job: dvc repro with params.yaml as it is (source checked first: see commands/source.py)
	$(ACTIVATE) python -m commands.source
	$(ACTIVATE) dvc repro

status: $(VENV)/.installed   ## up to date? nothing printed, exit 0; else what would re-run (dvc status + source fingerprints)
	$(ACTIVATE) python -m commands.status

TEST_JOBS ?= 2          # make test: pytest-xdist workers, one test file per worker at a time (1 = no workers)
test: install         ## unit tests, data tests (skipped without the mirror) and one end-to-end dvc repro
	$(ACTIVATE) python -m pytest -q --durations=25 $(if $(filter-out 1,$(TEST_JOBS)),-n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder) tests

results: install      ## the README "Results" run: `dvc exp run` on the local Kaggle mirror, per-stage wall times
	$(ACTIVATE) python tools/timed_repro.py -S data.source=local -S data.local.path=$(MIRROR)   # keep MIRROR relative: dvc.lock records it

SEEDS ?= 5
seeds: install        ## train.seed 0..SEEDS-1 as queued dvc experiments up to the decision -> reports/seeds.{json,md}
	$(ACTIVATE) python tools/seeds.py --seeds $(SEEDS)

BENCH_SCALE ?= 10        # make bench: the larger set of the memory-scaling run (times the data)
BENCH_IMAGES ?= 2000     # make bench: batch CLI throughput at this many files, and peak memory at BENCH_LARGE
BENCH_LARGE ?= 20000
BENCH_FILES ?= 50000     # make bench: files of the fingerprinted folder
BENCH_REPEATS ?= 2       # make bench: memory-scaling runs per input on the data (medians)
BENCH_SCRATCH ?=         # make bench: scratch folder of the memory-scaling set (default: a temp folder)
bench: install        ## the benchmark: whole pipeline on $(MIRROR), then SavedModel speed -> reports/benchmark.{json,md}
	$(ACTIVATE) python tools/bench.py --data $(MIRROR)
	$(ACTIVATE) python tools/bench.py --memory-scaling --data $(MIRROR) --scale $(BENCH_SCALE) --repeats $(BENCH_REPEATS) $(if $(BENCH_SCRATCH),--scratch $(BENCH_SCRATCH))   # train stage: peak memory + images/s, data vs a larger set, streamed vs in memory
	$(ACTIVATE) python tools/bench_predict.py --model models --images $(BENCH_IMAGES) --large $(BENCH_LARGE)   # batch CLI: images/s and peak memory
	$(ACTIVATE) python tools/bench_fingerprint.py --files $(BENCH_FILES)   # sources stage: fingerprint of a large folder

serve: install        ## serve the browser bundle models/web on http://$(HOST):$(PORT)/ (after `make run`; HOST=0.0.0.0 for the network, with a warning)
	$(ACTIVATE) python -m commands.serve models/web --port $(PORT) --host $(HOST)

mlflow-server: POSTGRES = 1
mlflow-server: install   ## a team MLflow server: PostgreSQL backend, proxied artifacts, on 127.0.0.1:$(MLFLOW_PORT) (Ctrl-C stops it)
	$(ACTIVATE) python tools/mlflow_server.py --port $(MLFLOW_PORT) $(if $(MLFLOW_DIR),--dir $(MLFLOW_DIR))

clean:
	rm -rf data/raw data/split data/shards models/* reports/* mlflow.db mlflow.db.lock mlruns
