"""End to end: the README's `make run` in a fresh copy of the repo with no team mirror beside it, from a cached
Kaggle copy of small generated parts (conftest.e2e_repo); the report and the inspector page are opened in headless
Chromium."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import HAS_BROWSER, REPO, sh
from inspection.decision.perturb import OOD_KINDS

OUTPUTS = [
    "data/raw/SOURCE.json", "data/split/manifest.csv", "reports/data.json", "models/model.keras",
    "models/mlflow_run.json", "reports/train/history.csv", "reports/metrics.json", "reports/eval/thresholds.csv",
    "reports/eval/pr.csv", "reports/eval/roc.csv", "reports/eval/confusion.csv", "reports/eval/predictions.csv",
    "reports/eval/operating_points.csv", "reports/eval/robustness.csv", "reports/eval/drift_reference.json",
    "models/saved_model/saved_model.pb", "models/tfjs/model.json", "models/metadata.json",
]
WEB_OUTPUTS = [  # and the report, which Chromium prints to PDF
    "reports/report.html", "reports/print/report.pdf",
    "models/web/index.html", "models/web/app.js", "models/web/preprocess.js", "models/web/metadata.json",
    "models/web/model/model.json", "models/web/vendor/tf.min.js", "models/web/vendor/tf-backend-wasm.min.js",
    "models/web/vendor/tfjs-backend-wasm-simd.wasm", "reports/export/parity.json",
    "reports/export/browser_benchmark.json", "reports/export/screenshots/inspector-1366.png",
    "reports/export/screenshots/inspector-390.png",
]
@pytest.fixture(scope="module")
def repo(e2e_repo):
    return e2e_repo


def test_every_declared_output_exists(repo):
    missing = [o for o in OUTPUTS + (WEB_OUTPUTS if HAS_BROWSER else []) if not (repo / o).exists()]
    assert not missing


def test_fresh_copy_took_the_cached_kaggle_copy(repo):
    source = json.loads((repo / "data/raw/SOURCE.json").read_text())
    assert source["source"] == "kaggle" and source["version"] == 2 and source["counts"] == {"defect": 70, "ok": 70}


def test_metrics_have_their_keys(repo):
    m = json.loads((repo / "reports/metrics.json").read_text())
    assert {"threshold", "policy", "val", "test"} <= set(m)
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "tp", "fp", "tn", "fn"):
        assert key in m["test"]
    assert 0 <= m["threshold"] < 1   # review_band auto: 0 when 70 photos a class cannot prove any low edge
    assert m["val"]["recall"] >= 0.995  # the band's low edge passed no validation defect
    assert m["policy"] == "review_band auto" and m["tta"] == "d4"
    choice = m["band_choice"]   # the band chosen on validation: edges per condition, trade-off, data needed
    assert choice["threshold"] == m["threshold"] and choice["data_needed"]["defects_for_zero_missed"] == 368
    assert set(choice["edges_by_condition"]) == {"clean", "exposure x1.25", "blur 1.5px", "rotate any"}
    per = m["threshold_by_condition"]  # the low edge on validation: clean + every gated perturbation
    assert set(per) == {"clean", "exposure x1.25", "blur 1.5px", "rotate any"} and m["threshold"] == min(per.values())
    assert set(m["robustness"]) == {"clean", "exposure x1.25", "blur 1.5px", "rotate any", "jpeg q40"}
    assert m["robustness"]["clean"]["recall"] == m["test"]["recall"]
    assert m["robustness_summary"]["gated"] == 3
    ci = m["test_intervals"]["missed_per_1000_defects"]
    assert ci["low"] <= ci["value"] <= ci["high"]
    band = m["review_band"]
    assert band["auto_pass"] + band["review"] + band["auto_reject"] == m["test"]["n"]
    rt = m["route"]["test"]  # the line's routes on the test split
    assert sum(sum(c.values()) for c in rt["counts"].values()) == rt["n"] == m["test"]["n"]
    assert rt["missed"] == rt["counts"]["defect"]["PASS"] and rt["false_rejects"] == rt["counts"]["ok"]["REJECT"]
    assert rt["intervals"]["missed"]["low"] <= rt["intervals"]["missed"]["rate"] <= rt["intervals"]["missed"]["high"]
    ood = m["ood"]  # every out-of-distribution image is RETAKE or REVIEW, never PASS
    assert ood["battery_passed"] == 0 and ood["battery_images"] == 4 * len(ood["battery"]) == 4 * len(OOD_KINDS) == 56
    rows = (repo / "reports/eval/ood.csv").read_text().splitlines()
    assert len(rows) == 57 and rows[0].startswith("kind,index,route,reason")
    assert ",PASS," not in "\n".join(rows)
    headline = json.loads((repo / "reports/headline.json").read_text())
    judged = {t["key"]: t for t in json.loads((repo / "reports/decision.json").read_text())["targets"]}
    assert len(headline) <= 15 and headline["retake_share_line"] == judged["retake"]["rate"]
    assert headline["review_share_line"] == judged["review"]["rate"]   # the decision's line mix, as the report
    c = rt["counts"]
    review = judged["review"]          # its k of n pooled, and each class's own count behind the line-mix rate
    assert review["k"] == c["defect"]["REVIEW"] + c["ok"]["REVIEW"] and review["n"] == rt["n"]
    assert review["by_class"] == {"defect": {"k": c["defect"]["REVIEW"], "n": rt["defects"]},
                                  "ok": {"k": c["ok"]["REVIEW"], "n": rt["ok"]}}
    rate = json.loads((repo / "reports/decision.json").read_text())["line_defect_rate"]
    assert review["rate"] == pytest.approx(rate * c["defect"]["REVIEW"] / rt["defects"]
                                           + (1 - rate) * c["ok"]["REVIEW"] / rt["ok"])
    assert not any("seconds" in k for k in headline)  # no wall times in the DVC metrics
    assert sh(["git", "check-ignore", "-q", "reports/headline.json"], repo, check=False).returncode == 1  # kept in git
    data = json.loads((repo / "reports/data.json").read_text())
    assert {"feature_auc", "combined_test_auc", "flagged"} <= set(data["confound"])


def test_metadata_describes_the_deployed_model(repo):
    meta = json.loads((repo / "models/metadata.json").read_text())
    assert meta["input"]["height"] == meta["input"]["width"] == 64
    assert meta["classes"] == ["ok", "defect"] and meta["positive_class"] == "defect"
    assert meta["parity"]["max_abs_diff_saved_model_vs_keras"] <= 1e-5
    assert meta["mlflow_run_id"] == json.loads((repo / "models/mlflow_run.json").read_text())["run_id"]
    assert len(meta["dataset_sha256"]) == 64
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert (meta["review_band"]["low"], meta["review_band"]["high"]) == (metrics["review_band"]["low"], metrics["review_band"]["high"])
    assert set(meta["drift"]["features"]) == {"brightness", "contrast", "sharpness"}
    route = meta["route"]
    assert route["words"] == ["PASS", "REVIEW", "REJECT", "RETAKE"] and route["threshold"] == metrics["threshold"]
    assert route["retake"]["ood"]["limit"] == metrics["ood"]["limit"] and route["rule"].startswith("RETAKE when")
    assert set(meta["outputs"]) == {"defect_probability", "ood_score"}
    from inspection.deploy.saved_model import saved_model_outputs
    from inspection.data.images import read_gray, resize
    from inspection.decision.route import decide
    from inspection.data.imagestats import features

    from inspection.fsutil import read_csv

    rows = [r for r in read_csv(repo / "reports/eval/predictions.csv") if r["split"] == "test"][:6]
    small = np.stack([resize(read_gray(repo / r["path"]), 64) for r in rows])
    out = saved_model_outputs(repo / "models/saved_model", small)
    for r, p, o, img in zip(rows, out["defect_probability"], out["ood_score"], small):
        assert decide(p, features(img), o, route)[0] == r["route"]  # the exported model routes like evaluate did


def test_mlflow_run_holds_params_metrics_artifacts(repo, monkeypatch):
    import mlflow

    run_id = json.loads((repo / "models/mlflow_run.json").read_text())["run_id"]
    # the store for this client and for MLflow's own look-ups (a "model" artifact path resolves to the logged
    # MLflow Model through the default tracking URI)
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # an earlier test in this process may have set MLflow's global URI, which wins over the variable
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.data.params["train.image_size"] == "64" and run.data.params["data.source"] == "auto"
    assert "test_recall" in run.data.metrics and "val_loss" in run.data.metrics and "tfjs_bytes" in run.data.metrics
    assert len(client.get_metric_history(run_id, "loss")) >= 1
    sha = json.loads((repo / "data/raw/SOURCE.json").read_text())["dataset_sha256"]
    assert run.data.tags["dataset_sha256"] == sha
    (used,) = run.inputs.dataset_inputs   # MLflow's Dataset column: name, digest, source, counts
    assert used.dataset.name == "casting-images" and sha.startswith(used.dataset.digest)
    assert "kaggle:ravirajsinh45/real-life-industrial-dataset-of-casting-product/versions/2" in used.dataset.source
    profile = json.loads(used.dataset.profile)
    assert profile["sha256"] == sha and sum(profile["train"].values()) + sum(profile["val"].values()) < 140
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"reports", "model"} <= top
    assert {"reports/report.html", "reports/report.pdf"} <= {a.path for a in client.list_artifacts(run_id, "reports")}
    model_files = {a.path for a in client.list_artifacts(run_id, "model")}
    assert {"model/metadata.json", "model/saved_model", "model/tfjs", "model/MLmodel"} <= model_files
    mlflow.set_tracking_uri(previous)


def test_status_clean_and_second_repro_runs_nothing(repo):
    if not HAS_BROWSER:
        pytest.skip("the web stage needs Chromium")
    # only `sources` (always_changed: it fingerprints data.extra / promote.golden, outside the repo) may be listed
    status = sh(["dvc", "status", "--json"], repo).stdout
    assert set(json.loads(status)) <= {"sources"}, status
    gate = sh([sys.executable, "-m", "commands.status"], repo, check=False)   # make status: the CI gate
    assert (gate.returncode, gate.stdout, gate.stderr) == (0, "", ""), gate
    again = sh(["dvc", "repro"], repo).stdout
    assert {line.split("'")[1] for line in again.splitlines() if line.startswith("Running stage")} <= {"sources"}, again


def test_bad_param_is_one_line_and_leaves_outputs(repo):
    params = (repo / "params.yaml").read_text()
    try:
        (repo / "params.yaml").write_text(params.replace("  policy: min_recall", "  policy: min_recal"))
        res = sh([sys.executable, "-m", "stages.evaluate"], repo, check=False)
        assert res.returncode == 2
        err = res.stderr.strip().splitlines()
        assert err[-1].startswith("error: params.yaml: evaluate.policy:") and "Traceback" not in res.stderr
    finally:
        (repo / "params.yaml").write_text(params)


def test_report_in_a_real_browser_shows_the_metrics_and_every_image(repo, browser):
    """Every number on the page equals metrics.json (or is derived from it), every image loads, no sideways scroll
    at 1280 or 390 px; the PDF has pages; the decision block is at the top."""
    from inspection.report.page import pdf_pages
    from test_report import check_numbers

    for width in (1280, 390):
        page = browser.new_page(viewport={"width": width, "height": 900})
        errors = []
        page.on("requestfailed", lambda r: errors.append(r.url))
        page.goto((repo / "reports/report.html").as_uri(), wait_until="load")
        images = page.evaluate("""() => Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])""")
        assert len(images) >= 6 and all(ok for _, ok in images), [alt for alt, ok in images if not ok]
        assert check_numbers(page, repo) > 50
        keys = set(page.evaluate("() => Array.from(document.querySelectorAll('[data-metric]'), e => e.dataset.metric)"))
        assert {"test.fn", "test.n", "threshold", "test.recall", "test.precision", "route.test.missed",
                "route.test.false_rejects", "route.test.intervals.missed.high", "route.test.counts.ok.REJECT"} <= keys
        decision = page.text_content("#decision")
        assert decision.startswith(("Ready for the line", "Not ready for the line, because"))
        assert "PASS" in page.text_content("#rule") and "RETAKE" in page.text_content("#rule")
        # the source data.source auto actually used (here Kaggle, from its cache), as data/raw/SOURCE.json says
        assert "Data source" in page.text_content("#signoff") and \
            "kaggle:ravirajsinh45/real-life-industrial-dataset-of-casting-product/versions/2" in page.text_content("#signoff")
        overflow = page.evaluate("() => document.documentElement.scrollWidth > window.innerWidth")
        assert not overflow, f"the page scrolls sideways at {width} px"
        shot = repo / "reports" / f"report-{width}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000 and not errors
        page.close()
    assert pdf_pages(repo / "reports/print/report.pdf") >= 2


def test_web_bundle_matches_the_saved_model(repo):
    if not HAS_BROWSER:
        pytest.skip("the web stage needs Chromium")
    parity = json.loads((repo / "reports/export/parity.json").read_text())
    assert parity["images"] == 8 and parity["verdict_mismatches"] == 0
    assert parity["max_abs_diff"] <= 1e-3
    assert {"node cpu", "node wasm", "chromium page (browser decode + resize)"} <= set(parity["runs"])
    assert parity["resize_node_vs_opencv"]["max_abs_pixel_diff"] == 0
    assert parity["resize_chromium_vs_opencv"]["max_abs_diff"] == 0
    bench = json.loads((repo / "reports/export/browser_benchmark.json").read_text())
    assert bench["backends"]["wasm"]["available"] and bench["backends"]["wasm"]["model_only"]["n"] == 5
    assert bench["chromium"].startswith("Chromium ")   # the browser's version, not a path on this machine
    meta = json.loads((repo / "models/web/metadata.json").read_text())
    assert meta["version"] == json.loads((repo / "models/metadata.json").read_text())["version"]
    html = (repo / "models/web/index.html").read_text() + (repo / "models/web/app.js").read_text()
    assert "http://" not in html and "https://" not in html  # nothing is fetched from a CDN


def test_bench_saved_model_speed_runs_on_the_exported_model(repo, monkeypatch):
    """tools/bench.py's SavedModel timing calls the signature by its output names (it broke on 'output_0')."""
    import sys

    sys.path.insert(0, str(REPO / "tools"))
    import bench

    monkeypatch.chdir(repo)
    images = np.random.default_rng(0).integers(0, 256, (8, 64, 64), dtype=np.uint8)
    speed = bench.saved_model_speed(images, batch=4, repeats=1, single=12)
    assert speed["images_per_run"] == 8 and speed["throughput_images_per_s_median"] > 0


def test_bundle_files_have_normal_modes(repo):
    """No executable bits from node_modules: `dvc checkout` would call the bundle modified."""
    modes = {oct(f.stat().st_mode & 0o777) for f in (repo / "models/web").rglob("*") if f.is_file()}
    assert modes == {"0o644"}, modes


def test_without_a_browser_report_and_web_skip_with_a_warning(repo, tmp_path):
    """web.require_browser false on a machine without Chromium: the report is written without its PDF and says
    so, the web stage runs Node parity only (still gating) and says so in parity.json; nothing else reruns."""
    import shutil

    import yaml

    copy = tmp_path / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["web"].update(chromium=str(tmp_path / "no-chromium"), require_browser=False)
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    res = sh(["dvc", "repro"], copy)
    ran = {line.split("'")[1] for line in res.stdout.splitlines() if line.startswith("Running stage")}
    assert ran <= {"sources", "report", "web"} and {"report", "web"} <= ran, res.stdout
    assert "report: WARNING: the PDF print" in res.stdout and "web: WARNING: the browser parity" in res.stdout
    parity = json.loads((copy / "reports/export/parity.json").read_text())
    assert parity["browser"].startswith("WARNING: ") and "web.require_browser is false" in parity["browser"]
    assert parity["runs"] and all(k.startswith("node ") for k in parity["runs"]) and parity["route_mismatches"] == 0
    bench = json.loads((copy / "reports/export/browser_benchmark.json").read_text())
    assert bench["backends"] == {} and "web.require_browser is false" in bench["warning"]
    assert not list((copy / "reports/export/screenshots").iterdir()) and not list((copy / "reports/print").iterdir())
    html = (copy / "reports/report.html").read_text()
    assert 'id="pdf-warning"' in html and "web.require_browser is false" in html


def test_no_output_records_a_machine_path_or_a_store(repo, tmp_path_factory):
    """A pulled output must not send a teammate's logs to this machine's store, nor name its folders: neither the
    folder the pipeline ran in (the session's shared run, of which ``repo`` is a copy), nor the Kaggle cache, nor
    any absolute path under the usual roots."""
    import re

    import yaml

    from conftest import _e2e_shared

    from inspection.runner.preflight import outputs, stage_spec

    dvc_yaml = yaml.safe_load((repo / "dvc.yaml").read_text())
    files = []
    for name in dvc_yaml["stages"]:
        for out in outputs(stage_spec(name, dvc_yaml)):
            p = repo / out
            files += [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else []
    texts = [f for f in files if f.suffix in {".json", ".csv", ".html", ".md", ".txt", ".yaml"}]
    assert len(texts) > 20
    ran_in = _e2e_shared(tmp_path_factory)
    needles = (str(repo), str(repo.parent), str(ran_in), str(ran_in.resolve()), "sqlite:", "mlflow.db")
    absolute = re.compile(r"(?<![\w.:/])/(tmp|root|home|work|var|usr|opt|mnt)/")
    bad = {}
    for f in texts:
        text = f.read_text(errors="replace")
        found = [n for n in needles if n in text] + [m.group(0) for m in absolute.finditer(text)][:1]
        if found:
            bad[str(f.relative_to(repo))] = found
    assert not bad, bad


def test_dvc_plots_render_offline(repo, tmp_path, browser):
    """`dvc plots show` with the repo's page template: vega from web/node_modules, no CDN; every plot of dvc.yaml
    is drawn as an SVG with the network blocked; the probability strip has a numeric 0-1 axis."""
    import shutil

    import yaml

    copy = tmp_path / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    res = sh(["dvc", "plots", "show"], copy)
    index = copy / "dvc_plots/index.html"
    assert index.exists(), res.stdout + res.stderr
    assert "cdn.jsdelivr" not in index.read_text()
    page = browser.new_page()
    blocked = []
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
               else (blocked.append(route.request.url), route.abort()))
    page.goto(index.as_uri())
    expected = len(yaml.safe_load((copy / "dvc.yaml").read_text())["plots"])
    page.wait_for_function(f"document.querySelectorAll('svg.marks').length >= {expected}", timeout=60_000)
    assert page.eval_on_selector_all("svg.marks", "e => e.length") == expected
    ticks = page.evaluate("""() => [...document.querySelectorAll('svg.marks')].map(s => s.textContent)
                             .find(t => t.includes('Defect probability per true class'))""")
    assert ticks and "0.5" in ticks and "1.0" in ticks   # a numeric axis, not one tick per value
    page.screenshot(path=str(tmp_path / "plots.png"), full_page=True)
    page.close()

    # the same plots with 2,000 points each (a real split's size): still one SVG per plot, few axis labels, no plot
    # wider than the page
    rng = np.random.default_rng(0)
    n = 2000
    q = np.sort(rng.uniform(0, 1, n))
    files = {"reports/eval/predictions.csv": "path,split,label,probability,verdict,correct,route,reason,ood_score\n" + "".join(
                 f"p{i}.jpeg,{'val' if i % 2 else 'test'},{'defect' if p > 0.5 else 'ok'},{p:.6f},x,1,PASS,,1.0\n"
                 for i, p in enumerate(rng.uniform(0, 1, n))),
             "reports/eval/thresholds.csv": "threshold,val_precision,val_recall,val_f1,test_precision,test_recall,test_f1\n"
                 + "".join(f"{t:.6f},{t:.4f},{1 - t:.4f},0.5,{t:.4f},{1 - t:.4f},0.5\n" for t in q),
             "reports/eval/pr.csv": "recall,precision\n" + "".join(f"{1 - t:.6f},{t:.6f}\n" for t in q),
             "reports/eval/roc.csv": "fpr,tpr\n" + "".join(f"{t:.6f},{min(1.0, 2 * t):.6f}\n" for t in q)}
    for name, text in files.items():
        (copy / name).write_text(text)
    sh(["dvc", "plots", "show"], copy)
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
    page.goto(index.as_uri())
    page.wait_for_function(f"document.querySelectorAll('svg.marks').length >= {expected}", timeout=60_000)
    labels = page.evaluate("""() => [...document.querySelectorAll('svg.marks')].map(s =>
        [s.getBoundingClientRect().width, s.querySelectorAll('.role-axis-label text').length])""")
    assert len(labels) == expected
    for width, count in labels:
        assert width <= 1366 and count <= 60, labels   # readable: a numeric axis, not one label per point
    page.screenshot(path=str(tmp_path / "plots-2000.png"), full_page=True)
    page.close()


def test_the_batch_cli_default_model_stays_while_export_reruns(repo, tmp_path):
    """While `dvc repro -f export` runs, models/ is gone (DVC removes outputs first); predicts with the default
    model run in a loop all the while and never fail: they use published/current, swapped atomically."""
    import shutil
    import time

    copy = tmp_path / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    assert (copy / "published/current/metadata.json").exists()   # the e2e run's export published it
    photos = copy / "data/raw/defect"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    repro = subprocess.Popen(["dvc", "repro", "-f", "--single-item", "export"], cwd=copy, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    results, saw_models_gone = [], False
    while repro.poll() is None or not results:
        saw_models_gone |= not (copy / "models/metadata.json").exists()
        res = subprocess.run([sys.executable, "-m", "commands.predict", str(photos)], cwd=copy, env=env,
                             capture_output=True, text=True)
        results.append((res.returncode, res.stderr[-300:]))
        time.sleep(0.2)
    out = repro.stdout.read()
    assert repro.returncode == 0, out[-2000:]
    assert saw_models_gone and len(results) >= 2, (saw_models_gone, len(results))
    assert all(code == 0 for code, _ in results), [r for r in results if r[0]]
    assert "export: published to" in out
