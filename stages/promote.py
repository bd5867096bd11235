"""TODO docstring."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from inspection.config import load_params
from inspection.errors import UserError
from inspection.runner.cli import cli
from inspection.fsutil import read_csv, read_json, staged_outputs, write_json
from inspection.artifacts import MANIFEST, METADATA, PROMOTION, SAVED_MODEL
from inspection.tracking.champion import TAG_BASELINE, TAG_DECISION, choose_baseline, counts, gate, golden_images, mcnemar, pixel_sha256, rates, score, seen_in_training, version_info


def main() -> None:
    params = load_params()
    rule, name, pos = params.promote, params.registry.model_name, params.data.positive_class
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from inspection.tracking import registry
    from inspection.deploy.resolver import resolve_model_dir
    from inspection.deploy.predictor import load_predictor
    from inspection.tracking.runs import stage_run

    for needed, stage in ((METADATA, "export"), (SAVED_MODEL, "export"), (MANIFEST, "split")):
        if not Path(needed).exists():
            raise UserError(f"{needed} is missing; run the {stage} stage first (dvc repro {stage})")
    metadata = read_json(METADATA)
    reg = registry.log_and_register(params, stage="promote")   # export's version, found by content hash
    mlflow, client = registry._client()
    ch = client.get_model_version(name, str(reg["version"]))
    champion_now = registry.version_by_alias(name, registry.CHAMPION, client)
    kind, base = choose_baseline(ch, champion_now, client, name)

    # the photos: challenger's test rows (+ golden) that neither model trained or validated on
    rows = read_csv(MANIFEST)
    seen = {r["sha256"] for r in rows if r["split"] in ("train", "val")}
    with tempfile.TemporaryDirectory(prefix="promote-") as tmp:
        if base is not None:
            m = registry.download_manifest(base, Path(tmp))
            if m is None:
                raise UserError(f"champion {name} version {base.version} has no split manifest logged (tag "
                                "split_manifest); cannot tell which photos it trained on, so it cannot be compared")
            seen_by_champion = seen_in_training(m)
        else:
            seen_by_champion = set()
    test = [r for r in rows if r["split"] == "test"]
    images = [(r["path"], r["label"], Path(r["path"])) for r in test if r["sha256"] not in seen_by_champion]
    golden = golden_images(rule.golden, params.data)
    from inspection.data.images import read_gray

    golden_kept = [g for g in golden if pixel_sha256(read_gray(g[2])) not in seen | seen_by_champion]
    images += golden_kept
    if not images:
        raise UserError("no held-out photos to compare on (every test photo was trained on by the champion); "
                        "add a golden set (promote.golden) or re-split")
    labels = [lab for _, lab, _ in images]

    print(f"promote: scoring {len(images)} held-out photos with the challenger (version {ch.version})")
    ch_routes, ch_probs = score(load_predictor(str(SAVED_MODEL.parent)), images)
    ch_counts = counts(labels, ch_routes, pos)
    out = {"model_name": name, "rule": rule.model_dump(),
           "challenger": {**version_info(ch, metadata), "threshold": metadata["threshold"], "counts": ch_counts,
                          "rates": rates(ch_counts)},
           "champion": None, "mcnemar": None, "images": len(images),
           "image_sources": {"test": len(images) - len(golden_kept), "golden": len(golden_kept),
                             "test_excluded_seen_by_champion": len(test) - (len(images) - len(golden_kept)),
                             "golden_excluded_seen_in_training": len(golden) - len(golden_kept)},
           "changed": []}
    if kind == "first":
        decision, alias, reason = "first model", registry.CHAMPION, "no champion in the registry yet"
        checks = []
    elif kind == "already":
        decision, alias = "kept champion", registry.CHAMPION
        reason, checks = f"version {ch.version} is already the champion (set outside the promote stage)", []
    else:
        base_dir = resolve_model_dir(f"models:/{name}/{base.version}")
        base_meta = read_json(base_dir / "metadata.json")
        print(f"promote: scoring the same photos with the champion (version {base.version})")
        cp_routes, cp_probs = score(load_predictor(str(base_dir)), images)
        cp_counts = counts(labels, cp_routes, pos)
        out["champion"] = {**version_info(base, base_meta), "threshold": base_meta["threshold"], "counts": cp_counts,
                           "rates": rates(cp_counts)}
        out["mcnemar"] = mcnemar(labels, cp_routes, ch_routes, pos)
        out["changed"] = [{"path": n, "label": lab, "champion_route": a, "challenger_route": z,
                           "champion_probability": pa, "challenger_probability": pz}
                          for (n, lab, _), a, z, pa, pz in zip(images, cp_routes, ch_routes, cp_probs, ch_probs) if a != z]
        passed, checks = gate(ch_counts, cp_counts, rule)
        decision, alias = ("promoted", registry.CHAMPION) if passed else ("kept champion", registry.CHALLENGER)
        reason = (f"version {ch.version} {'meets' if passed else 'does not meet'} the promotion rule against champion "
                  f"version {base.version}: " + "; ".join(checks))
    out.update(decision=decision, alias=alias, reason=reason, checks=checks)
    out["registry_state"] = {"model_name": name, "champion_compared": out["champion"] and version_info(base),
                             "challenger": version_info(ch, metadata)}

    # move the aliases (only while the champion is still one of the compared versions)
    compared = {ch.version} | ({base.version} if base is not None else set())
    if champion_now is not None and champion_now.version not in compared:
        print(f"promote: champion is now version {champion_now.version} (promoted after this comparison); aliases "
              f"left as they are")
    elif decision in ("first model", "promoted"):
        registry.set_alias(name, registry.CHAMPION, ch.version, client)
        if registry.version_by_alias(name, registry.CHALLENGER, client) is not None and \
                registry.version_by_alias(name, registry.CHALLENGER, client).version == ch.version:
            registry.delete_alias(name, registry.CHALLENGER, client)
    elif base is not None:
        registry.set_alias(name, registry.CHAMPION, base.version, client)
        registry.set_alias(name, registry.CHALLENGER, ch.version, client)
    if kind != "already":   # what this version was compared with: a re-run compares the same two models
        client.set_model_version_tag(name, ch.version, TAG_BASELINE, str(base.version) if base is not None else "none")
        client.set_model_version_tag(name, ch.version, TAG_DECISION, decision)

    with staged_outputs(PROMOTION) as staged:
        write_json(staged.path(PROMOTION), out)
    with stage_run("promote", params) as t:
        t.log_metrics({"promote_promoted": float(decision != "kept champion"), "promote_images": float(len(images)),
                       "promote_changed": float(len(out["changed"])),
                       **{f"promote_challenger_{k}": float(v) for k, v in ch_counts.items()}})
        t.log_artifact(str(PROMOTION), "reports")
    print(f"promote: {decision}: {name} version {ch.version} -> @{alias}; {reason}")
    if out["mcnemar"]:
        mc = out["mcnemar"]
        print(f"promote: {len(out['changed'])} parts changed route; McNemar b={mc['b']} c={mc['c']} p={mc['p_value']:.3g}")


if __name__ == "__main__":
    cli(main)()
