"""Stage 6, web: the offline browser bundle models/web/, checked against the SavedModel.

Bundle: the page (web/src), TF.js and its WebAssembly backend vendored from web/node_modules
(versions locked by web/package-lock.json), the TF.js graph model and metadata.json.
Parity: the same test images through TF.js in Node (CPU and WebAssembly backends) and in headless
Chromium (the page itself); both outputs must match the SavedModel (defect probability within
web.parity_tolerance, OOD score within web.ood_parity_tolerance relative) and every route must be the
Python rule's (stages/route.py vs web/src/route.js) -> reports/export/parity.json.
Screenshots of the page at 1366 px and 390 px -> reports/export/inspector-{1366,390}.png.
Benchmark: per-image latency in headless Chromium per backend -> reports/export/browser_benchmark.json.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from stages.config import load_params
from stages.errors import UserError, cli
from stages.fsutil import read_json, staged_outputs, write_json

WEB_SRC = Path("web/src")
NODE_MODULES = Path("web/node_modules")
BUNDLE = Path("models/web")
PARITY = Path("reports/export/parity.json")
BROWSER_BENCHMARK = Path("reports/export/browser_benchmark.json")
SCREENSHOTS = {1366: Path("reports/export/inspector-1366.png"), 390: Path("reports/export/inspector-390.png")}
OUTPUT_KEYS = ("defect_probability", "ood_score")
VENDOR = {  # bundle file -> file in web/node_modules
    "vendor/tf.min.js": "@tensorflow/tfjs/dist/tf.min.js",
    "vendor/tf-backend-wasm.min.js": "@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js",
    "vendor/tfjs-backend-wasm.wasm": "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm",
    "vendor/tfjs-backend-wasm-simd.wasm": "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm",
    "vendor/tfjs-backend-wasm-threaded-simd.wasm":
        "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm",
}
# the vendored runtime's licences travel with it (the npm packages ship none; both declare Apache-2.0, whose text
# is the project's LICENSE); bundle file -> file in the repository
VENDOR_LICENSES = {
    "vendor/LICENSE-Apache-2.0.txt": Path(__file__).resolve().parents[1] / "LICENSE",
    "vendor/THIRD_PARTY_NOTICES.txt": Path(__file__).resolve().parents[1] / "web/THIRD_PARTY_NOTICES.txt",
}


def node_modules_dir() -> Path:
    """web/node_modules here, or the main workspace's when this is a DVC temporary workspace without one
    (`dvc exp run --temp` / `--queue` run in <repo>/.dvc/tmp/exps/tmpXXXX, where npm ci never ran)."""
    from stages.paths import main_root

    local = Path(NODE_MODULES)
    if local.is_dir():
        return local
    main = main_root() / NODE_MODULES
    return main if main.is_dir() else local


def ensure_node_modules() -> Path:
    """The locked npm packages: web/node_modules (or the main workspace's) when it holds exactly the locked
    versions, else `npm ci` here. Returns the node_modules folder to use."""
    found = node_modules_dir()
    if node_modules_match_lock(found):
        return found
    if shutil.which("npm") is None:
        raise UserError("npm not found; install Node.js 18+ with npm, then run: npm ci --prefix web")
    print("web: npm ci (installing the locked TF.js packages)")
    res = subprocess.run(["npm", "ci", "--prefix", "web", "--no-audit", "--no-fund"], capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"npm ci failed ({tail}); check access to the npm registry and run: npm ci --prefix web")
    return Path(NODE_MODULES)


def node_modules_match_lock(modules: Path = NODE_MODULES) -> bool:
    locked = read_json("web/package-lock.json")["packages"]
    for key, entry in locked.items():
        if not key.startswith("node_modules/") or entry.get("optional"):
            continue
        installed = Path(modules) / key[len("node_modules/"):] / "package.json"
        if not installed.exists() or read_json(installed).get("version") != entry.get("version"):
            return False
    return True


def build_bundle(dest: Path, metadata: dict, tfjs: Path = Path("models/tfjs"), modules: Path = NODE_MODULES,
                 src: Path = WEB_SRC) -> dict[str, int]:
    """Copy the page, the vendored runtime and the model into dest; returns file sizes by part."""
    shutil.copytree(src, dest)
    for rel, pkg_file in VENDOR.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(modules) / pkg_file, dest / rel)
    for rel, repo_file in VENDOR_LICENSES.items():
        shutil.copy2(repo_file, dest / rel)
    packages = [read_json(Path(modules) / pkg / "package.json")
                for pkg in ("@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm")]
    write_json(dest / "vendor/VERSIONS.json", {p["name"]: {"version": p["version"], "license": p.get("license")}
                                               for p in packages})
    shutil.copytree(tfjs, dest / "model")
    write_json(dest / "metadata.json", metadata)
    size = lambda d: sum(f.stat().st_size for f in (dest / d).rglob("*") if f.is_file())  # noqa: E731
    return {"model": size("model"), "vendor": size("vendor"),
            "app": sum(f.stat().st_size for f in dest.iterdir() if f.is_file())}


def pick_parity_rows(n: int, positive_class: str) -> list[dict]:
    """A deterministic test sample with both classes: alternate defect / ok in manifest order."""
    from stages.dataset import manifest_rows

    rows = manifest_rows("test")
    pos = [r for r in rows if r["label"] == positive_class]
    neg = [r for r in rows if r["label"] != positive_class]
    k = min(len(pos), len(neg))
    return ([r for pair in zip(pos, neg) for r in pair] + pos[k:] + neg[k:])[:n]


def run_node(bundle_model: Path, full: list[np.ndarray], prepared: np.ndarray, rule: dict | None,
             outputs: dict | None, modules: Path = NODE_MODULES) -> dict:
    """web/tools/parity.mjs: both outputs and the routes in Node (CPU and WebAssembly backends)."""
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp)
        (req / "request.json").write_text(json.dumps(
            {"size": int(prepared.shape[1]), "rule": rule, "outputs": outputs,
             "images": [{"width": int(g.shape[1]), "height": int(g.shape[0])} for g in full]}))
        (req / "full.bin").write_bytes(b"".join(np.ascontiguousarray(g).tobytes() for g in full))
        (req / "prepared.bin").write_bytes(np.ascontiguousarray(prepared).tobytes())
        script = Path(__file__).resolve().parents[1] / "web/tools/parity.mjs"
        res = subprocess.run(["node", str(script), str(bundle_model), str(req), str(Path(modules).resolve())],
                             capture_output=True, text=True)
        if res.returncode != 0:
            err = [line for line in res.stderr.splitlines() if line.strip() and not line.startswith("    at ")]
            raise RuntimeError(f"node parity check failed: {' | '.join(err[-3:])}")
        return read_json(req / "result.json")


def run_chromium(browser, url: str, encoded: list[str], prepared: np.ndarray) -> dict:
    """The page in Chromium: its model on the Python-resized pixels, and the whole page path (decode, resize,
    camera statistics, model, route.js) from the JPEG bytes (base64, ``encoded``)."""
    from stages.browser import open_inspector

    page, info, _ = open_inspector(browser, url)
    n, size = prepared.shape[0], prepared.shape[1]
    outputs = page.evaluate("([px, n]) => window.inspector.predictPixels(px, n)", [prepared.reshape(-1).tolist(), n])
    pages = [page.evaluate("(b) => window.inspector.inspectBase64(b)", b64) for b64 in encoded]
    tensors = page.evaluate("() => window.inspector.memory().numTensors")
    page.close()
    unread = [i for i, r in enumerate(pages) if r["input"] is None]
    if unread:
        raise RuntimeError(f"the page could not read test image(s) {unread}: {pages[unread[0]]['reason']}")
    inputs = np.array([r["input"] for r in pages], np.int16).reshape(n, size, size)
    return {"backend": info["detail"], "prepared": outputs,
            "page": {"defect_probability": [r["probability"] for r in pages],
                     "ood_score": [r["ood_score"] for r in pages],
                     "routes": [[r["route"], r["reason"]] for r in pages]},
            "tensors_after": tensors,
            "page_pixels": {"max_abs_diff": int(np.abs(inputs - prepared).max()),
                            "differing": int((inputs != prepared).sum()), "pixels": int(inputs.size)}}


def compare(saved: dict[str, np.ndarray], run: dict, expected_routes: list[tuple[str, str]] | None,
            threshold: float) -> dict:
    """One TF.js run against the SavedModel: max |diff| of the probability, max relative diff of the OOD
    score (|a - b| / max(1, |b|)), threshold-verdict and route mismatches (routes: the run's own when it has
    them, else the SavedModel's rule applied to the run's numbers by the caller)."""
    p = np.asarray(run["defect_probability"], float)
    ref = saved["defect_probability"]
    out = {"max_abs_diff": float(np.abs(p - ref).max()),
           "verdict_mismatches": int(((p >= threshold) != (ref >= threshold)).sum())}
    if run.get("ood_score") is not None and "ood_score" in saved:
        o = np.asarray(run["ood_score"], float)
        out["ood_max_rel_diff"] = float((np.abs(o - saved["ood_score"]) / np.maximum(1.0, np.abs(saved["ood_score"]))).max())
    if expected_routes is not None and run.get("routes") is not None:
        got = [tuple(r) for r in run["routes"]]
        out["route_mismatches"] = sum(g[0] != e[0] for g, e in zip(got, expected_routes))
        out["reason_mismatches"] = sum(g[1] != e[1] for g, e in zip(got, expected_routes))
    return out


def saved_outputs(saved_model: Path, prepared: np.ndarray, metadata: dict) -> dict[str, np.ndarray]:
    """{defect_probability, ood_score} of the SavedModel's serving signature on prepared uint8 [N, H, W]."""
    from stages.export import saved_model_outputs

    raw = saved_model_outputs(saved_model, prepared)
    if set(OUTPUT_KEYS) <= set(raw) or "defect_probability" in raw:
        return {k: raw[k] for k in OUTPUT_KEYS if k in raw}
    if len(raw) == 1:  # a one-output model from before the OOD gate
        return {"defect_probability": next(iter(raw.values()))}
    raise UserError(f"the SavedModel's outputs {sorted(raw)} do not include defect_probability; re-run export")


BENCH_JS = """async ([px, repeats, files]) => {
  const ms = [];
  for (let i = 0; i < repeats; i += 1) {
    const t0 = performance.now();
    window.inspector.predictPixels(px, 1);
    ms.push(performance.now() - t0);
  }
  const page = [];
  for (const b of files) page.push((await window.inspector.inspectBase64(b)).ms);
  return { model: ms, page };
}"""


def screenshots(browser, url: str, paths: list[str], labels: list[int], dests: dict[int, Path], tmp: Path) -> list[dict]:
    """Upload a file that is not an image, two good parts, one good part photographed 40 % brighter (the
    camera check should send it to RETAKE) and two defects (the last one fills the banner), in the page itself;
    save a screenshot at each width (1366 px desktop, 390 px phone); return the table rows."""
    import cv2

    from stages.browser import open_inspector, upload
    from stages.images import read_gray

    good = [Path(p) for p, y in zip(paths, labels) if not y][:2]
    bad = [Path(p) for p, y in zip(paths, labels) if y][:2]
    bright = tmp / f"{good[-1].stem}_exposure_x1.4.png"
    cv2.imwrite(str(bright), cv2.convertScaleAbs(read_gray(good[-1]), alpha=1.4))
    junk = tmp / "notes_renamed.jpg"
    junk.write_text("this is a text file, not a photo\n")
    page, _, _ = open_inspector(browser, url)
    page.set_viewport_size({"width": max(dests), "height": 900})
    rows = upload(page, [junk, *good, bright, *bad])
    for width, dest in sorted(dests.items(), reverse=True):
        page.set_viewport_size({"width": width, "height": 900 if width > 600 else 844})
        page.screenshot(path=str(dest), full_page=True)
    page.evaluate("() => localStorage.clear()")
    page.close()
    return rows


def summarize(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"mean_ms": float(a.mean()), "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "n": int(a.size)}


def benchmark(browser, url: str, backends: list[str], repeats: int, sample: np.ndarray, encoded: list[str]) -> dict:
    from stages.browser import open_inspector

    out = {}
    for name in backends:
        print(f"web: browser latency, backend {name}")
        try:
            page, info, _ = open_inspector(browser, f"{url}?backend={name}")
        except RuntimeError as exc:
            out[name] = {"available": False, "error": str(exc)[:300]}
            continue
        timings = page.evaluate(BENCH_JS, [sample.reshape(-1).tolist(), repeats, encoded])
        page.close()
        out[name] = {"available": True, "detail": info["detail"],
                     "model_only": summarize(timings["model"]),
                     "page_per_image": summarize(timings["page"])}
    return out


def model_paths(ref: str) -> tuple[Path, Path, Path]:
    """(metadata.json, saved_model/, tfjs/) of a model folder (default models/) or a registry reference
    models:/casting-inspector@champion (stages/registry.py downloads it)."""
    from stages.export import METADATA, SAVED_MODEL, TFJS

    if ref == "models":
        return METADATA, SAVED_MODEL, TFJS
    if ref.startswith("models:/"):
        from stages.registry import resolve_model_dir

        folder = Path(resolve_model_dir(ref))
    else:
        folder = Path(ref)
    return folder / "metadata.json", folder / "saved_model", folder / "tfjs"


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m stages.web", description="Build and check the browser bundle.")
    ap.add_argument("--model", default="models", help="model folder (default models/, what dvc repro uses) or a "
                                                      "registry reference such as models:/casting-inspector@champion")
    args = ap.parse_args(argv)
    params = load_params()
    w, pos = params.web, params.data.positive_class
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from stages.browser import chromium, require_chromium, serve
    METADATA, SAVED_MODEL, TFJS = model_paths(args.model)  # noqa: N806
    from stages.images import read_many, resize
    from stages.imagestats import features
    from stages.route import decide
    from stages.tracking import stage_run

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
