"""Stage web: the offline browser bundle models/web/, checked against the SavedModel it was converted from.

Reads the model folder (models/ by default, or a registry reference: --model; its metadata.json, saved_model/
and tfjs/), test images of data/split/manifest.csv, web/src, web/node_modules and params ``web``. Writes
models/web (the page, TF.js vendored, the model and metadata.json), reports/export/parity.json (the same
test images through TF.js in Node and in headless Chromium must give the SavedModel's outputs and the Python
rule's routes: it fails otherwise), reports/export/browser_benchmark.json (latency per backend) and the
page's screenshots reports/export/screenshots/inspector-{1366,390}.png. With web.require_browser false and no
Chromium, the browser half is skipped with a warning in parity.json and browser_benchmark.json (the screenshots
folder stays empty); Node parity still runs and still gates."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from inspection.config import load_params
from inspection.errors import UserError
from inspection.runner.cli import cli
from inspection.fsutil import staged_outputs, write_json
from inspection.deploy.model_folder import load_metadata, load_saved_model
from inspection.artifacts import BROWSER_BENCHMARK, BUNDLE, PARITY, PIPELINE_MODEL, SCREENS, SCREENSHOTS
from inspection.deploy.bundle import build_bundle, ensure_node_modules
from inspection.deploy.parity import (benchmark_summary, chromium_checks, compare_runs, parity_summary,
                                      python_reference, require_parity, run_node)
from inspection.deploy.resolver import model_paths


def parse_args(argv: list[str] | None):
    import argparse

    ap = argparse.ArgumentParser(prog="python -m stages.web", description="Build and check the browser bundle.")
    ap.add_argument("--model", default=PIPELINE_MODEL, help="model folder (default models/, what dvc repro uses) or a "
                                                      "registry reference such as models:/casting-inspector@champion")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params()
    web, pos = params.web, params.data.positive_class
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from inspection.runner.preflight import BROWSER_STAGES, browser_or_skip
    meta_file, saved_model, tfjs = model_paths(args.model)   # of the model given (models/ or a registry version)

    # before any work: the Chromium half of the check would fail at the end (or, allowed, is skipped with a warning)
    skipped = browser_or_skip(web, BROWSER_STAGES["web"])
    for needed in (meta_file, saved_model, tfjs):
        if not Path(needed).exists():
            raise UserError(f"{needed} is missing; run the export stage first (dvc repro export)")
    metadata = load_metadata(meta_file)   # the model folder's schema, and the SavedModel against it: one line if not
    load_saved_model(saved_model, metadata, meta_file)
    modules = ensure_node_modules()
    ref = python_reference(saved_model, metadata, web.parity_images, pos)

    with staged_outputs(BUNDLE, PARITY, BROWSER_BENCHMARK, SCREENS) as out, \
            tempfile.TemporaryDirectory() as tmp:
        bundle = out.path(BUNDLE)
        print("web: building the bundle")
        sizes = build_bundle(bundle, metadata, tfjs, modules)
        print(f"web: parity on {len(ref.paths)} test images in Node (both outputs and the route)")
        node = run_node(bundle / "model", ref.full, ref.prepared, ref.rule, metadata.get("outputs"), modules)
        screens = out.path(SCREENS)
        screens.mkdir()
        if skipped:
            print(f"web: WARNING: {skipped}")
            chrome, bench, shown = None, {}, []
        else:
            chrome, bench, shown = chromium_checks(web, bundle, ref, pos,
                                                   {k: screens / v.name for k, v in SCREENSHOTS.items()}, Path(tmp))
        checks = compare_runs(node, chrome, ref, metadata["threshold"])
        parity = parity_summary(checks, ref, node, chrome, shown, sizes, web, metadata["threshold"], skipped)
        require_parity(checks, web.parity_tolerance, web.ood_parity_tolerance)
        write_json(out.path(PARITY), parity)
        write_json(out.path(BROWSER_BENCHMARK),
                   benchmark_summary(web, node, sizes, metadata, len(ref.paths), bench, skipped))
    log_to_mlflow(params, parity, bench)
    fastest = min(((v["model_only"]["mean_ms"], k) for k, v in bench.items() if v.get("available")), default=None)
    print(f"web: parity max |diff| {parity['max_abs_diff']:.2e} (probability)"
          + f", {parity['ood_max_rel_diff']:.2e} relative (OOD score)"
          + f" over {len(checks)} runs, 0 route changes; "
          + (f"fastest browser backend {fastest[1]} at {fastest[0]:.2f} ms/image" if fastest
             else "no browser: Node parity only (WARNING above)")
          + f"; bundle in {BUNDLE}/")


def log_to_mlflow(params, parity: dict, bench: dict) -> None:
    from inspection.tracking.runs import stage_run

    with stage_run("web", params) as mlflow:  # train's run, or a child run when params changed
        mlflow.log_metrics({"web_parity_max_abs_diff": parity["max_abs_diff"], "web_model_bytes": parity["model_bytes"],
                            "web_parity_ood_max_rel_diff": parity["ood_max_rel_diff"],
                            **{f"browser_{k}_p95_ms": v["model_only"]["p95_ms"] for k, v in bench.items()
                               if v.get("available")}})


if __name__ == "__main__":
    cli(main)()
