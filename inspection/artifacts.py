"""Every pipeline path, once, and where the repository is, also from a DVC temporary workspace.

The paths below are the DVC outputs each stage writes (dvc.yaml lists the same names); a consumer imports
the path from here, never from the stage that writes it.

`dvc exp run --temp` and `dvc queue start` run the pipeline in a throw-away copy of the
repository under ``<repo>/.dvc/tmp/exps/<tmpdir>/``. Things that live outside git (the MLflow
store, web/node_modules, data named by a relative path such as ../shared/...) are found in the
main workspace, so every experiment logs into one store and sees the same files."""
from __future__ import annotations

import os
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]   # the checkout this code runs from (dvc.yaml, web/, LICENSE)
TEMP_WORKSPACES = (".dvc", "tmp", "exps")


def main_root(cwd: Path | str | None = None) -> Path:
    """The main workspace: cwd, or the repository that holds cwd as a DVC temporary workspace."""
    here = Path(cwd or os.getcwd()).resolve()
    parts = here.parts
    n = len(TEMP_WORKSPACES)
    for i in range(len(parts) - n):
        if parts[i:i + n] == TEMP_WORKSPACES:
            return Path(*parts[:i])
    return here


def in_temp_workspace(cwd: Path | str | None = None) -> bool:
    return main_root(cwd) != Path(cwd or os.getcwd()).resolve()


def resolve_user_path(path: str | Path) -> Path:
    """A path from params.yaml: absolute as is; relative to the main workspace (so `../shared/...` means
    the same folder from a temporary workspace)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else main_root() / p


def stage_name() -> str | None:
    """The dvc.yaml stage this process runs: $DVC_STAGE under DVC, else from `python -m stages.<name>`."""
    name = os.environ.get("DVC_STAGE")
    if name:
        return name.rsplit(":", 1)[-1]
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    mod = getattr(spec, "name", "") or ""
    return mod.split(".", 1)[1] if mod.startswith("stages.") else None



# ---- the pipeline's files, in the order the stages write them (dvc.yaml: each stage's outs) ------------
# sources
EXTRA_HASHES = Path("data/extra.json")      # content hashes of data.extra (re-runs download when they change)
GOLDEN_HASH = Path("data/golden.json")      # content hash of promote.golden
SOURCE_HASH = Path("data/source.json")      # content hash of the main source (data.local.path, or the Kaggle cache)
FINGERPRINT_CACHE = Path("data/sources.cache.json")   # per-file content hashes by size + mtime (not a DVC output)
# download
RAW = Path("data/raw")                      # <class>/<file> images, SOURCE.json, ORIGINS.csv
TEST_SUBFOLDER = "source-test"              # data/raw/source-test/<class>/...: a source's own test folder
EXTRA_SUBFOLDER = "extra"                   # data/raw/<class>/extra/...: images from data.extra
ORIGINS = "ORIGINS.csv"                     # in data/raw: path (relative to data/raw), origin
SOURCE_INFO = "SOURCE.json"                 # in data/raw: where the images came from (source, counts, hashes)
# split
MANIFEST = Path("data/split/manifest.csv")
DATA_REPORT = Path("reports/data.json")
SPLITS = ("train", "val", "test")
# shards
SHARDS = Path("data/shards")
SHARD_INDEX = "index.json"                  # in data/shards
# train
MODEL = Path("models/model.keras")
HISTORY = Path("reports/train/history.csv")
RUN_FILE = Path("models/mlflow_run.json")   # the MLflow run later stages log into
# evaluate
METRICS = Path("reports/metrics.json")
DECISION = Path("reports/decision.json")       # ready for the line? (inspection.decision.readiness)
EVAL = Path("reports/eval")
DRIFT_REFERENCE = EVAL / "drift_reference.json"
GATE = Path("models/ood_gate.npz")
# export
# a model folder (models/, a registry download, published/<version>) holds these three
METADATA_FILE, SAVED_MODEL_DIR, TFJS_DIR = "metadata.json", "saved_model", "tfjs"
PIPELINE_MODEL = "models"   # the --model reference of the pipeline's own model folder (export writes it)
SAVED_MODEL = Path(PIPELINE_MODEL) / SAVED_MODEL_DIR
TFJS = Path(PIPELINE_MODEL) / TFJS_DIR
METADATA = Path(PIPELINE_MODEL) / METADATA_FILE
HEADLINE = Path("reports/headline.json")
# promote
PROMOTION = Path("reports/promotion.json")
# report
REPORT = Path("reports/report.html")
PRINT = Path("reports/print")             # the report printed by Chromium (empty when web.require_browser is false)
PDF = PRINT / "report.pdf"
# web
BUNDLE = Path("models/web")
PARITY = Path("reports/export/parity.json")
BROWSER_BENCHMARK = Path("reports/export/browser_benchmark.json")
SCREENS = Path("reports/export/screenshots")   # the page at desktop and phone width (empty without a browser)
SCREENSHOTS = {1366: SCREENS / "inspector-1366.png", 390: SCREENS / "inspector-390.png"}

# ---- inputs in git and local state outside DVC --------------------------------------------------------
WEB_SRC = Path("web/src")
NODE_MODULES = Path("web/node_modules")
PENDING = ".mlflow-pending"  # under the main workspace, beside mlflow.db; not a DVC output
