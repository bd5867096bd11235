"""The report's trend section: headline test numbers of the last evaluated runs in the MLflow store.

``trend`` reads the last report.trend_runs runs of the experiment that have test metrics (newest first), one row
per run with its start, commit and ``TREND_METRICS``, marks the current run, and plots them when there are two
or more. The section is optional: an unreachable store gives an empty section with a note, never an error.
"""
from __future__ import annotations

import datetime as dt
from inspection.report.figures import trend_figure


TREND_METRICS = ("threshold", "test_n", "test_tp", "test_fn", "test_fp", "test_recall", "test_miss_rate",
                 "test_false_reject_rate", "test_roc_auc", "test_route_missed", "test_route_false_rejects",
                 "review_share_line", "retake_share_line")


def trend(experiment: str, runs: int, current_run: str | None, tracking_uri: str | None = None) -> dict:
    """Headline numbers of the last ``runs`` evaluated runs of ``experiment`` (newest first) and a plot.
    {"rows": [...], "figure": uri | None, "note": str}; never raises (the store may be unreachable)."""
    try:
        import logging

        from mlflow import MlflowClient

        from inspection.tracking.store import tracking_uri as default_uri

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        uri = tracking_uri or default_uri()
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        found = [] if exp is None else client.search_runs(
            [exp.experiment_id], filter_string="metrics.test_recall >= 0", max_results=runs,
            order_by=["attributes.start_time DESC"])
    except Exception as exc:  # an optional section: say why it is empty instead of failing the report
        return {"rows": [], "figure": None, "note": f"the MLflow store could not be read ({type(exc).__name__}: {exc})"}
    rows = []
    for run in found:
        m, tags = run.data.metrics, run.data.tags
        commit = tags.get("git_commit", "")
        rows.append({"run_id": run.info.run_id, "name": run.info.run_name or run.info.run_id[:8],
                     "start": dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.timezone.utc)
                     .strftime("%Y-%m-%d %H:%M"),
                     "commit": commit[:10] + (" dirty" if commit.endswith("-dirty") else ""),
                     "current": run.info.run_id == current_run,
                     **{k: m.get(k) for k in TREND_METRICS}})
    note = "" if rows else f"no evaluated run in MLflow experiment {experiment!r} yet"
    return {"rows": rows, "figure": trend_figure(rows) if len(rows) >= 2 else None, "note": note, "uri": uri}
