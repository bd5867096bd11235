"""Stage promote: may the exported model (the challenger) replace the one on the line (the champion)?

Reads models/ (metadata.json, saved_model), data/split/manifest.csv, the golden set of promote.golden and the
MLflow Model Registry (registry.model_name: the challenger's version, registered by export, and the ``champion``
alias). Scores both models on the held-out photos neither trained or validated on, each with its own threshold
and route rule, and applies the rule of params ``promote`` (inspection/tracking/champion.py). Moves the
``champion`` / ``challenger`` aliases, tags the challenger with what it was compared with, and writes
reports/promotion.json (counts, rates, checks, McNemar's test, the parts that changed route, the decision)."""
from __future__ import annotations

import os
from pathlib import Path
from inspection.config import load_params
from inspection.errors import UserError
from inspection.runner.cli import cli
from inspection.fsutil import read_json, staged_outputs, write_json
from inspection.artifacts import DECISION, MANIFEST, METADATA, PROMOTION, SAVED_MODEL
from inspection.deploy.model_folder import load_metadata
from inspection.tracking.champion import (aliases_now, choose_baseline, compare_with_baseline, counts,
                                          held_out_images, move_aliases, refuse_not_ready, score, side, version_info)


def main() -> None:
    params = load_params()
    rule, name, pos = params.promote, params.registry.model_name, params.data.positive_class
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from inspection.tracking import registry
    from inspection.deploy.predictor import load_predictor

    for needed, stage in ((METADATA, "export"), (SAVED_MODEL, "export"), (MANIFEST, "split"), (DECISION, "evaluate")):
        if not Path(needed).exists():
            raise UserError(f"{needed} is missing; run the {stage} stage first (dvc repro {stage})")
    metadata = load_metadata(METADATA)   # the model folder's schema: a damaged file stops here, in one line
    reg = registry.log_and_register(params, stage="promote")   # export's version, found by content hash
    _, client = registry.registry_client()
    ch = client.get_model_version(name, str(reg["version"]))
    champion_now = registry.version_by_alias(name, registry.CHAMPION, client)
    kind, base = choose_baseline(ch, champion_now, client, name)
    # the photos: challenger's test rows (+ golden) that neither model trained or validated on
    images, sources = held_out_images(MANIFEST, base, name, rule.golden, params.data)
    labels = [lab for _, lab, _ in images]

    print(f"promote: scoring {len(images)} held-out photos with the challenger (version {ch.version})")
    ch_routes, ch_probs = score(load_predictor(str(SAVED_MODEL.parent)), images)
    ch_counts = counts(labels, ch_routes, pos)
    out = {"model_name": name, "rule": rule.model_dump(), "challenger": side(ch, metadata, ch_counts),
           "champion": None, "mcnemar": None, "images": len(images), "image_sources": sources, "changed": []}
    out.update(compare_with_baseline(kind, ch, base, name, images, routes=ch_routes, probs=ch_probs,
                                     ch_counts=ch_counts, rule=rule, positive=pos))
    judged = read_json(DECISION)
    out["ready"] = judged["ready"]
    out.update(refuse_not_ready(out, ch, judged, rule.allow_not_ready))
    out["registry_state"] = {"model_name": name, "champion_compared": out["champion"] and version_info(base),
                             "challenger": version_info(ch, metadata)}
    move_aliases(name, ch, base, champion_now, kind, out["decision"], client)
    with staged_outputs(PROMOTION) as staged:
        write_json(staged.path(PROMOTION), out)
    log_to_mlflow(params, out)
    print(f"promote: {out['decision']}: {name} version {ch.version} -> @{out['alias']}; {out['reason']}")
    print(f"promote: {name} aliases now: {aliases_now(name, ch, client)}")
    if out["mcnemar"]:
        mc = out["mcnemar"]
        print(f"promote: {len(out['changed'])} parts changed route; McNemar b={mc['b']} c={mc['c']} p={mc['p_value']:.3g}")


def log_to_mlflow(params, out: dict) -> None:
    from inspection.tracking.runs import stage_run

    with stage_run("promote", params) as tracker:
        tracker.log_metrics({"promote_promoted": float(out["decision"] in ("first model", "promoted")),
                       "promote_images": float(out["images"]), "promote_changed": float(len(out["changed"])),
                       **{f"promote_challenger_{k}": float(v) for k, v in out["challenger"]["counts"].items()}})
        tracker.log_artifact(str(PROMOTION), "reports")


if __name__ == "__main__":
    cli(main)()
