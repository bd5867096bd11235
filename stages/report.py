"""Stage report: the page a quality engineer signs, reports/report.html and its PDF print reports/print/report.pdf.

Reads every output the pipeline made (data.json, history.csv, metrics.json and the eval tables, the model folder's
metadata.json, promotion.json, the model for the Grad-CAM of bad cases) and the MLflow history of earlier runs;
the numbers and sentences come from inspection.report.numbers, the figures from inspection.report.figures, and
the page is rendered by Jinja2 (inspection/report/templates) and printed to PDF by the system Chromium. With
web.require_browser false and no Chromium, the PDF is skipped (reports/print/ stays empty) and the page says so.
"""
from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
import numpy as np
from inspection.config import changed_params, load_params
from inspection.errors import UserError
from inspection.runner.cli import cli
from inspection.fsutil import read_csv, read_json, staged_outputs
from inspection.artifacts import (DATA_REPORT, DECISION, EVAL, HISTORY, METADATA, METRICS, MODEL, PDF, PRINT,
                                  PROMOTION, REPORT, RUN_FILE)
from inspection.deploy.model_folder import load_metadata
from inspection.report.cases import case_images, pick_cases, promotion_section
from inspection.report.figures import band_figure, curve_figures, training_figure
from inspection.report.numbers import derive, training_sentence
from inspection.report.page import print_pdf, render, versions
from inspection.report.trend import trend


def collect(params) -> dict:
    """Read the pipeline's outputs (in the working directory) and build everything the page shows."""
    report, train = params.report, params.train
    from inspection.data.dataset import dataset_sha256, dataset_source
    from inspection.model.architectures import load_model
    from inspection.tracking.runs import git_commit

    for needed in (METRICS, DATA_REPORT, HISTORY, RUN_FILE, MODEL, EVAL / "predictions.csv"):
        if not Path(needed).exists():
            raise UserError(f"{needed} is missing; run the earlier stages first (dvc repro)")
    metrics, data, run = read_json(METRICS), read_json(DATA_REPORT), read_json(RUN_FILE)
    pos, neg = params.data.positive_class, params.data.negative_class
    robustness_csv = read_csv(EVAL / "robustness.csv") if (EVAL / "robustness.csv").exists() else []
    predictions = [dict(row, positive=pos) for row in read_csv(EVAL / "predictions.csv") if row["split"] == "test"]
    derived = derive(metrics, params, robustness_csv, read_json(DECISION), predictions)
    route = derived["route"]
    threshold = metrics["threshold"]
    band = route.get("review_band")
    y = np.array([row["label"] == pos for row in predictions])
    p = np.array([float(row["probability"]) for row in predictions])

    print("report: figures")
    figures = curve_figures(y, p, threshold, (band["low"], band["high"]) if band else None, (pos, neg))
    history = read_csv(HISTORY)
    figures["training"] = training_figure(history, int(run["best_epoch"]))
    if metrics.get("band_choice") and metrics["band_choice"]["curve"]:
        figures["band"] = band_figure(metrics["band_choice"], report.targets.max_missed_rate)

    ood = metrics.get("ood") or {}
    cases = pick_cases(predictions, threshold, report, band)
    print(f"report: Grad-CAM for {len(cases)} test images")
    case_images(load_model(MODEL), cases, train.image_size, report.thumbnail, ood.get("limit"),
                min(threshold, band["low"]) if band else threshold)

    print("report: trend of the last MLflow runs")
    trend_ = trend(train.mlflow_experiment, report.trend_runs, run.get("run_id"))
    promotion = promotion_section(PROMOTION, max(64, report.thumbnail // 2), report.max_misclassified)
    meta = load_metadata(METADATA) if METADATA.exists() else {}   # validated: the report names the model it signs
    commit = git_commit()
    return dict(
        m=metrics, data=data, run=run, figures=figures, cases=cases, pos=pos, neg=neg, derived=derived,
        route=route, operating_points=read_csv(EVAL / "operating_points.csv"), max_f1=metrics.get("max_f1_threshold"),
        ood=ood, trend=trend_, promotion=promotion, history_rows=len(history), params=params, meta=meta,
        commit=commit, dirty=commit.endswith("-dirty"),
        training_note=training_sentence(int(run.get("epochs_run") or len(history)), int(run["best_epoch"]),
                                        train.max_epochs, run.get("settled")),
        band_choice=metrics.get("band_choice"),
        identity={"git commit": commit, "data source": dataset_source(), "dataset sha256": dataset_sha256(),
                  "model version": meta.get("version", "not exported yet"),
                  "MLflow run": f"{run['run_id']} (experiment {run['experiment']})",  # no store URI in a DVC output
                  "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")},
        changed=changed_params(params), versions=versions(), pdf_warning=None)


def main() -> None:
    params = load_params()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t0 = time.perf_counter()
    from inspection.deploy.server import chromium
    from inspection.runner.preflight import BROWSER_STAGES, browser_or_skip
    from inspection.tracking.runs import stage_run

    skipped = browser_or_skip(params.web, BROWSER_STAGES["report"])  # checked in preflight too
    context = collect(params)
    context["pdf_warning"] = skipped
    html = render(context)
    meta, commit, run = context["meta"], context["commit"], context["run"]
    with staged_outputs(REPORT, PRINT) as out:
        out.path(REPORT).write_text(html, encoding="utf-8")
        out.path(PRINT).mkdir()
        if skipped:
            print(f"report: WARNING: {skipped}")
        else:
            print("report: printing the PDF with Chromium")
            with chromium(params.web.chromium) as browser:
                pages = print_pdf(browser, out.path(REPORT), out.path(PRINT) / PDF.name,
                                  f"Casting inspection report, model {meta.get('version', '?')}, commit {commit[:12]}")
    with stage_run("report", params) as mlflow:  # train's run, or a child run when params changed
        mlflow.log_artifact(str(REPORT), "reports")
        if not skipped:
            mlflow.log_artifact(str(PDF), "reports")
        mlflow.log_metric("report_seconds", time.perf_counter() - t0)
        logged_to = getattr(mlflow, "run_id", run["run_id"])
    printed = (f"{PDF} ({PDF.stat().st_size / 1e6:.2f} MB, {pages} pages)" if not skipped
               else "no PDF (WARNING above)")
    print(f"report: {REPORT} ({REPORT.stat().st_size / 1e6:.2f} MB, {len(context['cases'])} cases), {printed} "
          f"in {time.perf_counter() - t0:.1f} s. {context['derived']['decision']} Logged to MLflow run {logged_to}")


if __name__ == "__main__":
    cli(main)()
