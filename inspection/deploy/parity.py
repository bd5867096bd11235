"""Browser parity: the bundle's TF.js model in Node and headless Chromium, checked against the SavedModel.

Bundle: the page (web/src), TF.js and its WebAssembly backend vendored from web/node_modules
(versions locked by web/package-lock.json), the TF.js graph model and metadata.json.
Parity: the same test images through TF.js in Node (CPU and WebAssembly backends) and in headless
Chromium (the page itself); both outputs must match the SavedModel (defect probability within
web.parity_tolerance, OOD score within web.ood_parity_tolerance relative) and every route must be the
Python rule's (inspection/decision/route.py vs web/src/route.js) -> reports/export/parity.json.
Screenshots of the page at 1366 px and 390 px -> reports/export/inspector-{1366,390}.png.
Benchmark: per-image latency in headless Chromium per backend -> reports/export/browser_benchmark.json.
"""
from __future__ import annotations

from inspection.artifacts import REPO

from inspection.decision.route import ROUTES
from inspection.deploy.saved_model import OUTPUTS, output_diffs

import base64
import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
import numpy as np
from inspection.errors import UserError
from inspection.fsutil import read_json
from inspection.artifacts import NODE_MODULES


def pick_parity_rows(n: int, positive_class: str) -> list[dict]:
    """A deterministic test sample with both classes: alternate defect / ok in manifest order."""
    from inspection.data.dataset import manifest_rows

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
        script = REPO / "web/tools/parity.mjs"
        res = subprocess.run(["node", str(script), str(bundle_model), str(req), str(Path(modules).resolve())],
                             capture_output=True, text=True)
        if res.returncode != 0:
            err = [line for line in res.stderr.splitlines() if line.strip() and not line.startswith("    at ")]
            raise RuntimeError(f"node parity check failed: {' | '.join(err[-3:])}")
        return read_json(req / "result.json")


def run_chromium(browser, url: str, encoded: list[str], prepared: np.ndarray) -> dict:
    """The page in Chromium: its model on the Python-resized pixels, and the whole page path (decode, resize,
    camera statistics, model, route.js) from the JPEG bytes (base64, ``encoded``)."""
    from inspection.deploy.server import open_inspector

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


def compare(saved: dict[str, np.ndarray], run: dict, expected_routes: list[tuple[str, str]],
            threshold: float) -> dict:
    """One TF.js run against the SavedModel: max |diff| of the probability, max relative diff of the OOD
    score (|a - b| / max(1, |b|)), threshold-verdict and route mismatches (routes: the run's own when it has
    them, else the SavedModel's rule applied to the run's numbers by the caller)."""
    p, ref = np.asarray(run["defect_probability"], float), saved["defect_probability"]
    diff, ood_diff = output_diffs(run, saved)
    out = {"max_abs_diff": diff, "verdict_mismatches": int(((p >= threshold) != (ref >= threshold)).sum()),
           "ood_max_rel_diff": ood_diff}
    if run.get("routes") is not None:
        got = [tuple(r) for r in run["routes"]]
        out["route_mismatches"] = sum(g[0] != e[0] for g, e in zip(got, expected_routes))
        out["reason_mismatches"] = sum(g[1] != e[1] for g, e in zip(got, expected_routes))
    return out


def saved_outputs(saved_model: Path, prepared: np.ndarray) -> dict[str, np.ndarray]:
    """{defect_probability, ood_score} of the SavedModel's serving signature on prepared uint8 [N, H, W] (the
    web stage checked metadata.json's outputs against the SavedModel first)."""
    from inspection.deploy.saved_model import saved_model_outputs

    raw = saved_model_outputs(saved_model, prepared)
    missing = sorted(set(OUTPUTS) - set(raw))
    if missing:
        raise UserError(f"the SavedModel's outputs {sorted(raw)} lack {missing}; re-run export")
    return {k: raw[k] for k in OUTPUTS}


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

    from inspection.deploy.server import open_inspector, upload
    from inspection.data.images import read_gray

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
    from inspection.deploy.server import open_inspector

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


@dataclass
class Reference:
    """The Python side of the web stage's parity check: the test sample and what the SavedModel and the Python
    route rule make of it."""
    rows: list[dict]                # manifest rows of the sample (pick_parity_rows)
    full: list[np.ndarray]          # the photos decoded as grayscale, full size
    prepared: np.ndarray            # resized to the model's input: uint8 [N, H, W]
    saved: dict[str, np.ndarray]    # the SavedModel's outputs on ``prepared`` (saved_outputs)
    stats: list[dict]               # camera statistics of ``prepared``
    rule: dict                      # metadata.json's route block
    routes: list                    # the Python rule's (route, reason) per photo

    @property
    def paths(self) -> list[str]:
        return [r["path"] for r in self.rows]


def python_reference(saved_model: Path, metadata: dict, n: int, positive_class: str) -> Reference:
    """``n`` test photos through the Python pipeline: decode, resize to the model's own input size (a registered
    model may differ from params), SavedModel outputs, camera statistics and the route of metadata's rule."""
    from inspection.data.images import read_many, resize
    from inspection.data.imagestats import features
    from inspection.decision.route import decide

    size = int(metadata["input"]["height"])
    rule = metadata["route"]
    rows = pick_parity_rows(n, positive_class)
    full = read_many([r["path"] for r in rows])
    prepared = np.stack([resize(g, size) for g in full])
    saved = saved_outputs(saved_model, prepared)
    stats = [features(g) for g in prepared]
    routes = [decide(float(p), st, float(o), rule)
              for p, st, o in zip(saved["defect_probability"], stats, saved["ood_score"])]
    return Reference(rows, full, prepared, saved, stats, rule, routes)


def chromium_checks(web, bundle: Path, ref: Reference, positive_class: str, dests: dict[int, Path],
                    tmp: Path) -> tuple[dict, dict, list[dict]]:
    """The bundle served locally, in headless Chromium (params ``web``): the page's parity run (run_chromium),
    the latency benchmark and the screenshots (``dests``: width -> file); returns the three results."""
    from inspection.deploy.server import chromium, serve

    print("web: parity in headless Chromium")
    with chromium(web.chromium) as browser, serve(bundle) as url:
        encoded = [base64.b64encode(Path(p).read_bytes()).decode() for p in ref.paths]
        chrome = run_chromium(browser, url, encoded, ref.prepared)
        bench = benchmark(browser, url, web.benchmark_backends, web.benchmark_repeats, ref.prepared[:1], encoded[:16])
        labels = [int(r["label"] == positive_class) for r in ref.rows]
        shown = screenshots(browser, url, ref.paths, labels, dests, tmp)
    return chrome, bench, shown


def compare_runs(node: dict, chrome: dict | None, ref: Reference, threshold: float) -> dict[str, dict]:
    """Every TF.js run against the SavedModel (compare), by name: Node per backend on Python's pixels and with
    the page's resize, Chromium on Python's pixels (routed by the Python rule) and the page itself."""
    from inspection.decision.route import decide

    runs = {f"node {b}": r["prepared"] for b, r in node["backends"].items()}
    runs.update({f"node {b} (page resize)": r["js_resize"] for b, r in node["backends"].items()})
    if chrome is None:  # no browser (web.require_browser false): Node only
        return {name: compare(ref.saved, run, ref.routes, threshold) for name, run in runs.items()}
    chrome_prepared = dict(chrome["prepared"])   # the page's numbers on Python's pixels, routed by the Python rule
    chrome_prepared["routes"] = [decide(p, st, q, ref.rule) for p, st, q in
                                 zip(chrome_prepared["defect_probability"], ref.stats, chrome_prepared["ood_score"])]
    runs[f"chromium {chrome['backend']}"] = chrome_prepared
    runs["chromium page (browser decode + resize)"] = chrome["page"]
    return {name: compare(ref.saved, run, ref.routes, threshold) for name, run in runs.items()}


def parity_summary(checks: dict[str, dict], ref: Reference, node: dict, chrome: dict | None, shown: list[dict],
                   sizes: dict, web, threshold: float, skipped: str | None = None) -> dict:
    """reports/export/parity.json: the worst differences over all runs, mismatch totals, the Python routes,
    each run's check, resize and camera-statistics parity, the page upload and versions and sizes."""
    worst = max(c["max_abs_diff"] for c in checks.values())
    worst_ood = max((c.get("ood_max_rel_diff", 0.0) for c in checks.values()), default=0.0)
    js_stats = np.array([[s[k] for k in ("brightness", "contrast", "sharpness")] for s in node["features"]])
    py_arr = np.array([[s[k] for k in ("brightness", "contrast", "sharpness")] for s in ref.stats])
    return {
        "images": len(ref.rows), "tolerance": web.parity_tolerance, "ood_tolerance": web.ood_parity_tolerance,
        "threshold": threshold, "outputs": sorted(ref.saved), "graph_outputs": node["nodes"],
        "max_abs_diff": worst, "ood_max_rel_diff": worst_ood,
        "verdict_mismatches": sum(c["verdict_mismatches"] for c in checks.values()),
        "route_mismatches": sum(c.get("route_mismatches", 0) for c in checks.values()),
        "reason_mismatches": sum(c.get("reason_mismatches", 0) for c in checks.values()),
        "routes": {r: sum(x[0] == r for x in ref.routes) for r in ROUTES},
        "runs": checks,
        "resize_node_vs_opencv": node["resize"],
        "resize_chromium_vs_opencv": chrome["page_pixels"] if chrome else None,
        "camera_stats_max_rel_diff": float((np.abs(js_stats - py_arr) / np.maximum(np.abs(py_arr), 1)).max()),
        "page_upload": shown, "page_tensors_after": chrome["tensors_after"] if chrome else None,
        "tfjs": node["tfjs"], "node": node["node"], "chromium_backend": chrome["backend"] if chrome else None,
        "browser": "checked in headless Chromium" if chrome else f"WARNING: {skipped}",
        "model_bytes": sizes["model"], "bundle_bytes": sizes,
    }


def require_parity(checks: dict[str, dict], tolerance: float, ood_tolerance: float) -> None:
    """Fail (UserError) when any run differs from the SavedModel by more than ``tolerance`` (probability) or
    ``ood_tolerance`` (OOD score, relative), or changes a threshold verdict or a route."""
    bad = {k: v for k, v in checks.items() if v["max_abs_diff"] > tolerance or v["verdict_mismatches"]
           or v.get("ood_max_rel_diff", 0.0) > ood_tolerance or v.get("route_mismatches", 0)}
    if bad:
        raise UserError(f"TF.js disagrees with the SavedModel (web.parity_tolerance {tolerance:g}, "
                        f"web.ood_parity_tolerance {ood_tolerance:g}, 0 route mismatches allowed): "
                        f"{bad}; do not deploy this bundle")


def chromium_version(chromium) -> str:
    """'Chromium 156.0.8078.73 ...' (what the browser says of itself), not its path: outputs name no machine folder."""
    try:
        res = subprocess.run([str(chromium), "--version"], capture_output=True, text=True, timeout=30)
        return res.stdout.strip() or Path(chromium).name
    except (OSError, subprocess.SubprocessError):
        return Path(chromium).name


def benchmark_summary(web, node: dict, sizes: dict, metadata: dict, images: int, bench: dict,
                      skipped: str | None = None) -> dict:
    """reports/export/browser_benchmark.json: per backend, model-only and whole-page latency in Chromium
    (empty ``backends`` and the warning when the browser was skipped)."""
    size = int(metadata["input"]["height"])
    return {"chromium": chromium_version(web.chromium), **({"warning": skipped} if skipped else {}), "tfjs": node["tfjs"], "model_bytes": sizes["model"],
            "quantization": metadata.get("tfjs_quantization", "none"), "input": [size, size],
            "repeats": web.benchmark_repeats, "page_images": min(16, images), "backends": bench,
            "note": "model_only: one prepared image through the model (both outputs); page_per_image: decode + "
                    "grayscale + resize + camera statistics + model + route for one JPEG, as the page does it"}
