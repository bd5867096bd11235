"""Champion / challenger: may the new model (the challenger) replace the one on the line (the champion)?

The exported model is registered (export does it; this stage re-uses that version by its content hash, or
registers it if export could not). The current ``champion`` alias of registry.model_name is scored on the same
images as the challenger: the challenger's test photos that the champion neither trained nor chose its threshold
on (each version's split manifest is logged with it; images are matched by the sha256 of their decoded pixels),
plus the fixed golden set of promote.golden (class sub-folders) when set, minus anything either model trained or
validated on. Each model decides with its own threshold and route rule (inspection.decision.route.decide on its own
metadata.json, through commands.predict: the batch CLI's code path).

Rule (params ``promote``): the challenger misses (routes PASS) at most max_extra_missed more defects than the
champion, its false-reject rate (good parts routed REJECT) is at most the champion's + false_reject_margin, its
RETAKE share is at most max_retake_share, and at least min_images photos were compared. McNemar's exact test on
the parts where exactly one model is right (pass vs not-pass) is reported beside the counts.
It passes: alias ``champion`` -> challenger. It fails: ``challenger`` -> challenger, the champion stays. The first
model of an empty registry becomes champion.

Purity: a version's decision is made against the champion of the moment it was first compared (recorded on the
version as tag promotion.baseline), so re-running with the same inputs compares the same two models and writes
the same reports/promotion.json, whose ``registry_state`` records both versions and their content hashes.
Aliases are only moved while the champion is still one of the two compared versions.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from inspection.errors import UserError
from inspection.fsutil import read_csv


TAG_BASELINE = "promotion.baseline"     # on a version: the champion it was compared with ("none": first model)
TAG_DECISION = "promotion.decision"


def counts(labels: list[str], routes: list[str], positive: str) -> dict:
    d = [r for lab, r in zip(labels, routes) if lab == positive]
    ok = [r for lab, r in zip(labels, routes) if lab != positive]
    return {"n": len(routes), "defects": len(d), "ok": len(ok),
            "missed": d.count("PASS"), "false_rejects": ok.count("REJECT"),
            "review": routes.count("REVIEW"), "retake": routes.count("RETAKE"),
            "pass": routes.count("PASS"), "reject": routes.count("REJECT")}


def rates(c: dict) -> dict:
    return {"missed_rate": c["missed"] / c["defects"] if c["defects"] else 0.0,
            "false_reject_rate": c["false_rejects"] / c["ok"] if c["ok"] else 0.0,
            "retake_share": c["retake"] / c["n"] if c["n"] else 0.0,
            "review_share": c["review"] / c["n"] if c["n"] else 0.0}


def correct(label: str, route: str, positive: str) -> bool:
    """Pass vs not-pass: a defect must not pass, a good part should pass."""
    return (route != "PASS") if label == positive else (route == "PASS")


def mcnemar(labels: list[str], champion: list[str], challenger: list[str], positive: str) -> dict:
    """Exact McNemar test: b = champion right and challenger wrong, c = the reverse; two-sided binomial p of b
    among the b + c discordant parts (1.0 when there are none)."""
    from scipy.stats import binomtest

    b = sum(correct(lab, a, positive) and not correct(lab, z, positive) for lab, a, z in zip(labels, champion, challenger))
    c = sum(not correct(lab, a, positive) and correct(lab, z, positive) for lab, a, z in zip(labels, champion, challenger))
    p = float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return {"b": int(b), "c": int(c), "p_value": p,
            "meaning": "b: parts the champion got right (pass vs not-pass) and the challenger wrong; c: the reverse"}


def gate(challenger: dict, champion: dict, rule) -> tuple[bool, list[str]]:
    """(passes, one sentence per check) for challenger vs champion counts under the promote params."""
    ch, cp = rates(challenger), rates(champion)
    checks = []
    ok_missed = challenger["missed"] <= champion["missed"] + rule.max_extra_missed
    checks.append((ok_missed, f"missed defects {challenger['missed']} vs champion {champion['missed']} "
                              f"(allowed + {rule.max_extra_missed})"))
    ok_fr = ch["false_reject_rate"] <= cp["false_reject_rate"] + rule.false_reject_margin + 1e-12
    checks.append((ok_fr, f"false-reject rate {ch['false_reject_rate']:.4f} vs champion {cp['false_reject_rate']:.4f} "
                          f"(allowed + {rule.false_reject_margin:g})"))
    ok_rt = ch["retake_share"] <= rule.max_retake_share + 1e-12
    checks.append((ok_rt, f"RETAKE share {ch['retake_share']:.4f} (limit {rule.max_retake_share:g})"))
    enough = challenger["n"] >= rule.min_images
    checks.append((enough, f"{challenger['n']} held-out photos compared (minimum {rule.min_images})"))
    return all(ok for ok, _ in checks), [("passed: " if ok else "FAILED: ") + text for ok, text in checks]


def seen_in_training(manifest: Path) -> set[str]:
    """sha256 of every image a version trained or chose its threshold on (its train and val rows)."""
    return {r["sha256"] for r in read_csv(manifest) if r["split"] in ("train", "val")}


def golden_images(folder: str | None, data) -> list[tuple[str, str, Path]]:
    """(name, class, path) of the golden set: promote.golden/<class folder>/<files>."""
    if not folder:
        return []
    from inspection.data.images import IMAGE_EXTENSIONS, iter_image_files
    from inspection.artifacts import resolve_user_path
    from inspection.data.acquire import find_class_folders

    root = resolve_user_path(folder)
    if not root.is_dir():
        raise UserError(f"promote.golden {root} is not a folder; give a folder with one sub-folder per class or null")
    out = []
    for cls, dirs in sorted(find_class_folders(root, data).train.items()):
        for d in dirs:
            for f in iter_image_files(d):
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    out.append((f"golden/{f.relative_to(root).as_posix()}", cls, f))
    return out


def version_info(mv, metadata: dict | None = None) -> dict:
    tags = mv.tags or {}
    return {"version": int(mv.version), "run_id": mv.run_id, "content_hash": tags.get("content_hash"),
            "model_version": tags.get("model_version") or (metadata or {}).get("version")}


def score(predictor, images: list[tuple[str, str, Path]]) -> tuple[list[str], list[float | None]]:
    """Routes and defect probabilities of ``predictor`` (commands.predict) for (name, class, path) images."""
    from inspection.deploy.predictor import predict_items

    rows = list(predict_items([(name, path.read_bytes) for name, _, path in images], predictor))
    return [r["route"] for r in rows], [float(r["defect_probability"]) if r["defect_probability"] else None
                                        for r in rows]


def choose_baseline(ch, champion_now, client, name) -> tuple[str, object | None]:
    """What this challenger is compared with: ("first", None) when it was (or now is) the first model of the
    registry; ("champion", version) for the champion recorded on it at its first comparison, else today's champion;
    ("already", None) when it is already the champion without a recorded comparison (alias set by hand)."""
    recorded = (ch.tags or {}).get(TAG_BASELINE)
    if recorded == "none":
        return "first", None
    if recorded:
        try:
            return "champion", client.get_model_version(name, recorded)
        except Exception:
            pass  # the recorded version was deleted: compare with today's champion
    if champion_now is None:
        return "first", None
    if champion_now.version == ch.version:
        return "already", None
    return "champion", champion_now


def held_out_images(manifest: Path, base, name: str, golden: str | None,
                    data) -> tuple[list[tuple[str, str, Path]], dict]:
    """The photos both models are scored on, as (name, class, path): the challenger's test rows (``manifest``)
    that the champion ``base`` (None: no champion to compare with) neither trained nor validated on, plus the
    golden set minus anything either model trained or validated on; and how many came from where
    (promotion.json's image_sources)."""
    from inspection.tracking import registry
    from inspection.data.images import pixel_sha256, read_gray

    rows = read_csv(manifest)
    seen = seen_in_training(manifest)
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
    every_golden = golden_images(golden, data)
    golden_kept = [g for g in every_golden if pixel_sha256(read_gray(g[2])) not in seen | seen_by_champion]
    images += golden_kept
    if not images:
        raise UserError("no held-out photos to compare on (every test photo was trained on by the champion); "
                        "add a golden set (promote.golden) or re-split")
    from_test = len(images) - len(golden_kept)
    return images, {"test": from_test, "golden": len(golden_kept),
                    "test_excluded_seen_by_champion": len(test) - from_test,
                    "golden_excluded_seen_in_training": len(every_golden) - len(golden_kept)}


def side(mv, metadata: dict, c: dict) -> dict:
    """promotion.json's entry for one model: its version, threshold, route counts and rates."""
    return {**version_info(mv, metadata), "threshold": metadata["threshold"], "counts": c, "rates": rates(c)}


def compare_with_baseline(kind: str, ch, base, name: str, images: list[tuple[str, str, Path]], *,
                          routes: list[str], probs: list[float | None], ch_counts: dict, rule, positive: str) -> dict:
    """The decision on the challenger ``ch`` (scored: ``routes``, ``probs``, ``ch_counts``) for choose_baseline's
    ``kind`` and ``base``: decision, alias, reason and checks; against a champion also its entry (scored on the same
    ``images`` with its own threshold and route rule), McNemar's test and the parts that changed route."""
    from inspection.tracking import registry

    if kind == "first":   # worded so that it stays true when a re-run reproduces this decision (purity, above)
        return {"decision": "first model", "alias": registry.CHAMPION,
                "reason": f"version {ch.version} is the registry's first model, made champion without a comparison",
                "checks": []}
    if kind == "already":
        return {"decision": "kept champion", "alias": registry.CHAMPION,
                "reason": f"version {ch.version} is already the champion (set outside the promote stage)", "checks": []}
    from inspection.deploy.model_folder import load_metadata
    from inspection.deploy.predictor import load_predictor
    from inspection.deploy.resolver import resolve_model_dir

    labels = [lab for _, lab, _ in images]
    base_dir = resolve_model_dir(f"models:/{name}/{base.version}")
    base_meta = load_metadata(base_dir)
    print(f"promote: scoring the same photos with the champion (version {base.version})")
    cp_routes, cp_probs = score(load_predictor(str(base_dir)), images)
    cp_counts = counts(labels, cp_routes, positive)
    out = {"champion": side(base, base_meta, cp_counts), "mcnemar": mcnemar(labels, cp_routes, routes, positive),
           "changed": [{"path": n, "label": lab, "champion_route": a, "challenger_route": z,
                        "champion_probability": pa, "challenger_probability": pz}
                       for (n, lab, _), a, z, pa, pz in zip(images, cp_routes, routes, cp_probs, probs) if a != z]}
    passed, checks = gate(ch_counts, cp_counts, rule)
    decision, alias = ("promoted", registry.CHAMPION) if passed else ("kept champion", registry.CHALLENGER)
    reason = (f"version {ch.version} {'meets' if passed else 'does not meet'} the promotion rule against champion "
              f"version {base.version}: " + "; ".join(checks))
    return {**out, "decision": decision, "alias": alias, "reason": reason, "checks": checks}


REFUSED = "refused: not ready"


def refuse_not_ready(out: dict, ch, judged: dict, allow_not_ready: bool) -> dict:
    """A champion must be ready for the line (reports/decision.json): a promotion or a first model whose decision
    says not ready is refused, unless promote.allow_not_ready. Returns ``out``'s decision fields, changed or not."""
    from inspection.tracking import registry

    if judged["ready"] or out["decision"] not in ("first model", "promoted"):
        return {}
    if allow_not_ready:
        return {"reason": out["reason"] + "; not ready for the line (reports/decision.json), promoted because "
                                          "promote.allow_not_ready is true"}
    return {"decision": REFUSED, "alias": registry.CHALLENGER,
            "reason": (f"version {ch.version} would have been {out['decision']!r} but is not ready for the line: "
                       f"{judged['sentence']} (reports/decision.json; promote.allow_not_ready: true overrides)")}


def aliases_now(name: str, ch, client) -> str:
    """The registry's aliases after the decision, e.g. "champion -> version 1 (this model)": a re-run whose
    decision was made earlier (a --temp or queued experiment of the same model) still names today's champion."""
    try:
        aliases = client.get_registered_model(name).aliases or {}
    except Exception as exc:  # noqa: BLE001 - informative only
        return f"unknown ({type(exc).__name__})"
    if not aliases:
        return "none"
    return ", ".join(f"{alias} -> version {v}" + (" (this model)" if str(v) == str(ch.version) else "")
                     for alias, v in sorted(aliases.items()))


def move_aliases(name: str, ch, base, champion_now, kind: str, decision: str, client) -> None:
    """Point the aliases at the decision (only while the champion is still one of the compared versions: a
    promotion made after this comparison is left alone) and record on the challenger what it was compared with
    and the decision (tags TAG_BASELINE, TAG_DECISION): a re-run compares the same two models."""
    from inspection.tracking import registry

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
    elif decision == REFUSED:   # no champion to keep: the refused model waits as the challenger
        registry.set_alias(name, registry.CHALLENGER, ch.version, client)
    if kind != "already":   # what this version was compared with: a re-run compares the same two models
        client.set_model_version_tag(name, ch.version, TAG_BASELINE, str(base.version) if base is not None else "none")
        client.set_model_version_tag(name, ch.version, TAG_DECISION, decision)
