"""Stage 6, web: the offline browser bundle models/web/, checked against the SavedModel.

Bundle: the page (web/src), TF.js and its WebAssembly backend vendored from web/node_modules
(versions locked by web/package-lock.json), the TF.js graph model and metadata.json.
Parity: the same test images through TF.js in Node (CPU and WebAssembly backends) and in headless
Chromium (the page itself); probabilities must match the SavedModel within web.parity_tolerance
and verdicts must be identical -> reports/export/parity.json.
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
SCREENSHOT = Path("reports/export/inspector.png")
VENDOR = {  # bundle file -> file in web/node_modules
    "vendor/tf.min.js": "@tensorflow/tfjs/dist/tf.min.js",
    "vendor/tf-backend-wasm.min.js": "@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js",
    "vendor/tfjs-backend-wasm.wasm": "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm",
    "vendor/tfjs-backend-wasm-simd.wasm": "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm",
    "vendor/tfjs-backend-wasm-threaded-simd.wasm":
        "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm",
}


def ensure_node_modules() -> None:
    """Install the locked npm packages (npm ci) unless web/node_modules holds exactly the locked versions."""
    if node_modules_match_lock():
        return
    if shutil.which("npm") is None:
        raise UserError("npm not found; install Node.js 18+ with npm, then run: npm ci --prefix web")
    print("web: npm ci (installing the locked TF.js packages)")
    res = subprocess.run(["npm", "ci", "--prefix", "web", "--no-audit", "--no-fund"], capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"npm ci failed ({tail}); check access to the npm registry and run: npm ci --prefix web")


def node_modules_match_lock() -> bool:
    locked = read_json("web/package-lock.json")["packages"]
    for key, entry in locked.items():
        if not key.startswith("node_modules/") or entry.get("optional"):
            continue
        installed = Path("web") / key / "package.json"
        if not installed.exists() or read_json(installed).get("version") != entry.get("version"):
            return False
    return True


def build_bundle(dest: Path, metadata: dict) -> dict[str, int]:
    """Copy the page, the vendored runtime and the model into dest; returns file sizes by part."""
    shutil.copytree(WEB_SRC, dest)
    for rel, src in VENDOR.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(NODE_MODULES / src, dest / rel)
    packages = [read_json(NODE_MODULES / pkg / "package.json") for pkg in ("@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm")]
    write_json(dest / "vendor/VERSIONS.json", {p["name"]: {"version": p["version"], "license": p.get("license")}
                                               for p in packages})
    shutil.copytree("models/tfjs", dest / "model")
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


def run_node(bundle_model: Path, full: list[np.ndarray], prepared: np.ndarray) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp)
        (req / "request.json").write_text(json.dumps(
            {"size": int(prepared.shape[1]), "images": [{"width": int(g.shape[1]), "height": int(g.shape[0])}
                                                        for g in full]}))
        (req / "full.bin").write_bytes(b"".join(np.ascontiguousarray(g).tobytes() for g in full))
        (req / "prepared.bin").write_bytes(np.ascontiguousarray(prepared).tobytes())
        res = subprocess.run(["node", "web/tools/parity.mjs", str(bundle_model), str(req)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            err = [line for line in res.stderr.splitlines() if line.strip() and not line.startswith("    at ")]
            raise RuntimeError(f"node parity check failed: {' | '.join(err[-3:])}")
        return read_json(req / "result.json")


def run_chromium(browser, url: str, encoded: list[str], prepared: np.ndarray) -> dict:
    """The page in Chromium: its model on the Python-resized pixels, and the whole page path from the
    JPEG bytes (base64, ``encoded``)."""
    from stages.browser import open_inspector

    page, info, _ = open_inspector(browser, url)
    n, size = prepared.shape[0], prepared.shape[1]
    probs = page.evaluate("([px, n]) => window.inspector.predictPixels(px, n)",
                          [prepared.reshape(-1).tolist(), n])
    pages = [page.evaluate("(b) => window.inspector.inspectBase64(b)", b64) for b64 in encoded]
    page.close()
    inputs = np.array([r["input"] for r in pages], np.int16).reshape(n, size, size)
    return {"backend": info["detail"], "prepared": probs, "page": [r["probability"] for r in pages],
            "page_pixels": {"max_abs_diff": int(np.abs(inputs - prepared).max()),
                            "differing": int((inputs != prepared).sum()), "pixels": int(inputs.size)}}


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


def screenshot(browser, url: str, paths: list[str], labels: list[int], dest: Path, tmp: Path) -> list[dict]:
    """Upload two defects, two good parts and one good part photographed 40 % brighter (the drift
    flag should fire on it) in the page itself; save a screenshot; return the table rows."""
    import cv2

    from stages.browser import open_inspector, upload
    from stages.images import read_gray

    pick = [p for p, y in zip(paths, labels) if y][:2] + [p for p, y in zip(paths, labels) if not y][:2]
    files = [Path(p) for p in pick]
    bright = tmp / f"{files[-1].stem}_exposure_x1.4.png"
    cv2.imwrite(str(bright), cv2.convertScaleAbs(read_gray(files[-1]), alpha=1.4))
    page, _, _ = open_inspector(browser, url)
    page.set_viewport_size({"width": 1100, "height": 900})
    rows = upload(page, [*files, bright])
    page.screenshot(path=str(dest), full_page=True)
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


def main() -> None:
    params = load_params()
    w, size, pos = params.web, params.train.image_size, params.data.positive_class
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from stages.browser import chromium, serve
    from stages.export import METADATA, SAVED_MODEL, saved_model_predict
    from stages.images import read_many, resize
    from stages.imagestats import features
    from stages.tracking import resume_run

    ensure_node_modules()
    metadata = read_json(METADATA)
    rows = pick_parity_rows(w.parity_images, pos)
    paths = [r["path"] for r in rows]
    full = read_many(paths)
    prepared = np.stack([resize(g, size) for g in full])
    _, saved = saved_model_predict(SAVED_MODEL, prepared)
    saved = saved[:, 0].astype(float)
    threshold = metadata["threshold"]

    with staged_outputs(BUNDLE, PARITY, BROWSER_BENCHMARK, SCREENSHOT) as out, \
            tempfile.TemporaryDirectory() as tmp:
        bundle = out.path(BUNDLE)
        print("web: building the bundle")
        sizes = build_bundle(bundle, metadata)
        print(f"web: parity on {len(paths)} test images in Node")
        node = run_node(bundle / "model", full, prepared)
        print("web: parity in headless Chromium")
        with chromium(w.chromium) as browser, serve(bundle) as url:
            encoded = [base64.b64encode(Path(p).read_bytes()).decode() for p in paths]
            chrome = run_chromium(browser, url, encoded, prepared)
            bench = benchmark(browser, url, w.benchmark_backends, w.benchmark_repeats, prepared[:1], encoded[:16])
            labels = [int(r["label"] == pos) for r in rows]
            shown = screenshot(browser, url, paths, labels, out.path(SCREENSHOT), Path(tmp))

        runs = {f"node {b}": r["prepared"] for b, r in node["backends"].items()}
        runs.update({f"node {b} (page resize)": r["js_resize"] for b, r in node["backends"].items()})
        runs[f"chromium {chrome['backend']}"] = chrome["prepared"]
        runs["chromium page (browser decode + resize)"] = chrome["page"]
        checks = {}
        for name, probs in runs.items():
            p = np.asarray(probs, float)
            checks[name] = {"max_abs_diff": float(np.abs(p - saved).max()),
                            "verdict_mismatches": int(((p >= threshold) != (saved >= threshold)).sum())}
        worst = max(checks.values(), key=lambda c: c["max_abs_diff"])
        js_stats = np.array([[s[k] for k in ("brightness", "contrast", "sharpness")] for s in node["features"]])
        py_stats = np.array([[features(g)[k] for k in ("brightness", "contrast", "sharpness")] for g in prepared])
        parity = {
            "images": len(paths), "tolerance": w.parity_tolerance, "threshold": threshold,
            "max_abs_diff": worst["max_abs_diff"],
            "verdict_mismatches": sum(c["verdict_mismatches"] for c in checks.values()),
            "runs": checks,
            "resize_node_vs_opencv": node["resize"],
            "resize_chromium_vs_opencv": chrome["page_pixels"],
            "drift_stats_max_rel_diff": float((np.abs(js_stats - py_stats) / np.maximum(np.abs(py_stats), 1)).max()),
            "page_upload": shown,
            "tfjs": node["tfjs"], "node": node["node"], "chromium_backend": chrome["backend"],
            "model_bytes": sizes["model"], "bundle_bytes": sizes,
        }
        if parity["max_abs_diff"] > w.parity_tolerance or parity["verdict_mismatches"]:
            bad = {k: v for k, v in checks.items() if v["max_abs_diff"] > w.parity_tolerance or v["verdict_mismatches"]}
            raise UserError(f"TF.js disagrees with the SavedModel beyond web.parity_tolerance "
                            f"{w.parity_tolerance:g}: {bad}; do not deploy this bundle")
        write_json(out.path(PARITY), parity)
        write_json(out.path(BROWSER_BENCHMARK), {
            "chromium": str(w.chromium), "tfjs": node["tfjs"], "model_bytes": sizes["model"],
            "quantization": metadata.get("tfjs_quantization", "none"), "input": [size, size],
            "repeats": w.benchmark_repeats, "page_images": min(16, len(paths)), "backends": bench,
            "note": "model_only: one prepared image through model.predict; page_per_image: decode + grayscale + "
                    "resize + drift statistics + predict for one JPEG, as the page does it"})
    with resume_run() as mlflow:
        mlflow.log_metrics({"web_parity_max_abs_diff": parity["max_abs_diff"], "web_model_bytes": sizes["model"],
                            **{f"browser_{k}_p95_ms": v["model_only"]["p95_ms"] for k, v in bench.items()
                               if v.get("available")}})
    fastest = min((v["model_only"]["mean_ms"], k) for k, v in bench.items() if v.get("available"))
    print(f"web: parity max |diff| {parity['max_abs_diff']:.2e} over {len(checks)} runs, 0 verdict changes; "
          f"fastest browser backend {fastest[1]} at {fastest[0]:.2f} ms/image; bundle in {BUNDLE}/")


if __name__ == "__main__":
    cli(main)()
