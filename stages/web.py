"""TODO docstring."""
from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
import numpy as np
from inspection.config import load_params
from inspection.errors import UserError
from inspection.runner.cli import cli
from inspection.fsutil import read_json, staged_outputs, write_json
from inspection.artifacts import BROWSER_BENCHMARK, BUNDLE, PARITY, SCREENSHOTS
from inspection.deploy.bundle import build_bundle, ensure_node_modules
from inspection.deploy.parity import benchmark, compare, pick_parity_rows, run_chromium, run_node, saved_outputs, screenshots
from inspection.deploy.resolver import model_paths


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m stages.web", description="Build and check the browser bundle.")
    ap.add_argument("--model", default="models", help="model folder (default models/, what dvc repro uses) or a "
                                                      "registry reference such as models:/casting-inspector@champion")
    args = ap.parse_args(argv)
    params = load_params()
    w, pos = params.web, params.data.positive_class
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from inspection.deploy.server import chromium, require_chromium, serve
    METADATA, SAVED_MODEL, TFJS = model_paths(args.model)  # noqa: N806
    from inspection.data.images import read_many, resize
    from inspection.data.imagestats import features
    from inspection.decision.route import decide
    from inspection.tracking.runs import stage_run

    require_chromium(w.chromium)  # before any work: the Chromium half of the check would fail at the end
    for needed in (METADATA, SAVED_MODEL, TFJS):
        if not Path(needed).exists():
            raise UserError(f"{needed} is missing; run the export stage first (dvc repro export)")
    modules = ensure_node_modules()
    metadata = read_json(METADATA)
    size = int(metadata["input"]["height"])  # the model's own input size (a registered model may differ from params)
    rule = metadata.get("route")
    rows = pick_parity_rows(w.parity_images, pos)
    paths = [r["path"] for r in rows]
    full = read_many(paths)
    prepared = np.stack([resize(g, size) for g in full])
    saved = saved_outputs(SAVED_MODEL, prepared, metadata)
    has_ood = "ood_score" in saved
    py_stats = [features(g) for g in prepared]
    py_routes = ([decide(float(p), st, float(o) if has_ood else None, rule)
                  for p, st, o in zip(saved["defect_probability"], py_stats,
                                      saved["ood_score"] if has_ood else saved["defect_probability"])]
                 if rule else None)
    threshold = metadata["threshold"]

    with staged_outputs(BUNDLE, PARITY, BROWSER_BENCHMARK, *SCREENSHOTS.values()) as out, \
            tempfile.TemporaryDirectory() as tmp:
        bundle = out.path(BUNDLE)
        print("web: building the bundle")
        sizes = build_bundle(bundle, metadata, TFJS, modules)
        print(f"web: parity on {len(paths)} test images in Node (both outputs and the route)")
        node = run_node(bundle / "model", full, prepared, rule, metadata.get("outputs"), modules)
        print("web: parity in headless Chromium")
        with chromium(w.chromium) as browser, serve(bundle) as url:
            encoded = [base64.b64encode(Path(p).read_bytes()).decode() for p in paths]
            chrome = run_chromium(browser, url, encoded, prepared)
            bench = benchmark(browser, url, w.benchmark_backends, w.benchmark_repeats, prepared[:1], encoded[:16])
            labels = [int(r["label"] == pos) for r in rows]
            shown = screenshots(browser, url, paths, labels, {k: out.path(v) for k, v in SCREENSHOTS.items()},
                                Path(tmp))

        runs = {f"node {b}": r["prepared"] for b, r in node["backends"].items()}
        runs.update({f"node {b} (page resize)": r["js_resize"] for b, r in node["backends"].items()})
        chrome_prepared = dict(chrome["prepared"])
        if rule:  # the page's numbers on Python's pixels, routed by the Python rule
            o = chrome_prepared.get("ood_score") or [None] * len(paths)
            chrome_prepared["routes"] = [decide(p, st, q, rule) for p, st, q in
                                         zip(chrome_prepared["defect_probability"], py_stats, o)]
        runs[f"chromium {chrome['backend']}"] = chrome_prepared
        runs["chromium page (browser decode + resize)"] = chrome["page"]
        checks = {name: compare(saved, run, py_routes, threshold) for name, run in runs.items()}
        worst = max(c["max_abs_diff"] for c in checks.values())
        worst_ood = max((c.get("ood_max_rel_diff", 0.0) for c in checks.values()), default=0.0)
        js_stats = np.array([[s[k] for k in ("brightness", "contrast", "sharpness")] for s in node["features"]])
        py_arr = np.array([[s[k] for k in ("brightness", "contrast", "sharpness")] for s in py_stats])
        parity = {
            "images": len(paths), "tolerance": w.parity_tolerance, "ood_tolerance": w.ood_parity_tolerance,
            "threshold": threshold, "outputs": sorted(saved), "graph_outputs": node["nodes"],
            "max_abs_diff": worst, "ood_max_rel_diff": worst_ood if has_ood else None,
            "verdict_mismatches": sum(c["verdict_mismatches"] for c in checks.values()),
            "route_mismatches": sum(c.get("route_mismatches", 0) for c in checks.values()),
            "reason_mismatches": sum(c.get("reason_mismatches", 0) for c in checks.values()),
            "routes": ({r: sum(x[0] == r for x in py_routes) for r in ("PASS", "REVIEW", "REJECT", "RETAKE")}
                       if py_routes else None),
            "runs": checks,
            "resize_node_vs_opencv": node["resize"],
            "resize_chromium_vs_opencv": chrome["page_pixels"],
            "camera_stats_max_rel_diff": float((np.abs(js_stats - py_arr) / np.maximum(np.abs(py_arr), 1)).max()),
            "page_upload": shown, "page_tensors_after": chrome["tensors_after"],
            "tfjs": node["tfjs"], "node": node["node"], "chromium_backend": chrome["backend"],
            "model_bytes": sizes["model"], "bundle_bytes": sizes,
        }
        bad = {k: v for k, v in checks.items() if v["max_abs_diff"] > w.parity_tolerance or v["verdict_mismatches"]
               or v.get("ood_max_rel_diff", 0.0) > w.ood_parity_tolerance or v.get("route_mismatches", 0)}
        if bad:
            raise UserError(f"TF.js disagrees with the SavedModel (web.parity_tolerance {w.parity_tolerance:g}, "
                            f"web.ood_parity_tolerance {w.ood_parity_tolerance:g}, 0 route mismatches allowed): "
                            f"{bad}; do not deploy this bundle")
        write_json(out.path(PARITY), parity)
        write_json(out.path(BROWSER_BENCHMARK), {
            "chromium": str(w.chromium), "tfjs": node["tfjs"], "model_bytes": sizes["model"],
            "quantization": metadata.get("tfjs_quantization", "none"), "input": [size, size],
            "repeats": w.benchmark_repeats, "page_images": min(16, len(paths)), "backends": bench,
            "note": "model_only: one prepared image through the model (both outputs); page_per_image: decode + "
                    "grayscale + resize + camera statistics + model + route for one JPEG, as the page does it"})
    with stage_run("web", params) as mlflow:  # train's run, or a child run when params changed
        mlflow.log_metrics({"web_parity_max_abs_diff": parity["max_abs_diff"], "web_model_bytes": sizes["model"],
                            **({"web_parity_ood_max_rel_diff": worst_ood} if has_ood else {}),
                            **{f"browser_{k}_p95_ms": v["model_only"]["p95_ms"] for k, v in bench.items()
                               if v.get("available")}})
    fastest = min((v["model_only"]["mean_ms"], k) for k, v in bench.items() if v.get("available"))
    print(f"web: parity max |diff| {parity['max_abs_diff']:.2e} (probability)"
          + (f", {worst_ood:.2e} relative (OOD score)" if has_ood else "")
          + f" over {len(checks)} runs, 0 route changes; fastest browser backend {fastest[1]} at "
          f"{fastest[0]:.2f} ms/image; bundle in {BUNDLE}/")


if __name__ == "__main__":
    cli(main)()
