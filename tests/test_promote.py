"""The promote stage: champion / challenger gate (stages/promote.py) on the end-to-end run's model, in a fresh
registry; the rule, McNemar's exact test, the aliases, and a re-run that reproduces the same decision."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import section
from test_registry import NAME, make_store



def test_counts_rule_and_mcnemar():
    from inspection.tracking.champion import counts, gate, mcnemar

    labels = ["defect"] * 4 + ["ok"] * 4
    champion = ["REJECT", "REJECT", "REVIEW", "PASS", "PASS", "PASS", "PASS", "REJECT"]
    challenger = ["REJECT", "PASS", "REVIEW", "PASS", "PASS", "REVIEW", "RETAKE", "PASS"]
    c = counts(labels, challenger, "defect")
    assert c == {"n": 8, "defects": 4, "ok": 4, "missed": 2, "false_rejects": 0, "review": 2, "retake": 1,
                 "pass": 4, "reject": 1}
    m = mcnemar(labels, champion, challenger, "defect")
    # right = defect not passed / good part passed: champion right on 0,1,2,4,5,6; challenger on 0,2,4,7
    assert (m["b"], m["c"]) == (3, 1) and m["p_value"] == pytest.approx(0.625)
    rule = section("promote", max_extra_missed=0, false_reject_margin=0.0, max_retake_share=0.2, min_images=8)
    passed, checks = gate(c, counts(labels, champion, "defect"), rule)
    assert not passed and checks[0].startswith("FAILED: missed defects 2 vs champion 1")
    assert all(x.startswith("passed") for x in checks[1:])
    same = counts(labels, champion, "defect")
    assert gate(same, same, rule)[0]
    assert not gate(same, same, section("promote", min_images=9))[0]     # not enough evidence
    assert mcnemar(labels, champion, champion, "defect") == {**m, "b": 0, "c": 0, "p_value": 1.0}


def test_e2e_run_made_its_model_the_first_champion(e2e_repo):
    import mlflow

    out = json.loads((e2e_repo / "reports/promotion.json").read_text())
    assert out["decision"] == "first model" and out["champion"] is None and out["challenger"]["version"] == 1
    client = mlflow.MlflowClient(f"sqlite:///{e2e_repo / 'mlflow.db'}")
    assert client.get_registered_model(NAME).aliases == {"champion": 1}


def set_ready(ready: bool) -> None:
    """Edit reports/decision.json's verdict (what evaluate judged)."""
    path = Path("reports/decision.json")
    doc = json.loads(path.read_text())
    doc["ready"] = ready
    doc["sentence"] = "Ready for the line: test." if ready else "Not ready for the line, because test."
    path.write_text(json.dumps(doc))


def set_params(**promote) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["promote"].update(promote)
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def set_route(threshold: float | None = None, band="keep", note: str | None = None) -> None:
    """Edit models/metadata.json's decision rule (a different deployed model for the registry: new content hash)."""
    path = Path("models/metadata.json")
    meta = json.loads(path.read_text())
    if threshold is not None:
        meta["threshold"] = meta["route"]["threshold"] = threshold
    if band != "keep":
        meta["review_band"] = meta["route"]["review_band"] = band
    if note is not None:
        meta["input"]["note"] = note
    path.write_text(json.dumps(meta, indent=2))


def test_champion_and_challenger(e2e_repo, tmp_path, monkeypatch):
    import mlflow

    from stages import promote

    uri = make_store(e2e_repo, tmp_path / "work", monkeypatch)
    set_params(max_retake_share=0.5, min_images=5, allow_not_ready=False)   # the tiny e2e model: a looser RETAKE limit
    set_ready(True)
    client = mlflow.MlflowClient(uri)
    out_file = Path("reports/promotion.json")

    promote.main()                                     # an empty registry: the first model becomes champion
    first = json.loads(out_file.read_text())
    assert first["decision"] == "first model" and first["alias"] == "champion"
    assert first["images"] == first["challenger"]["counts"]["n"] > 0
    original = Path("models/metadata.json").read_text()

    set_route(threshold=1.0, band=None)                # a challenger that passes every part (p < 1): misses all defects
    promote.main()
    worse = json.loads(out_file.read_text())
    assert worse["decision"] == "kept champion" and worse["alias"] == "challenger"
    assert worse["challenger"]["version"] == 2 and worse["champion"]["version"] == 1
    ch, cp = worse["challenger"]["counts"], worse["champion"]["counts"]
    assert ch["missed"] == ch["defects"] > cp["missed"] and "FAILED: missed defects" in worse["reason"]
    assert worse["challenger"]["threshold"] == 1.0 and worse["champion"]["threshold"] == first["challenger"]["threshold"]
    assert worse["changed"] and all(c["challenger_route"] == "PASS" for c in worse["changed"])
    assert worse["mcnemar"]["b"] >= cp["defects"] - cp["missed"] - 0 and worse["mcnemar"]["p_value"] <= 1.0
    assert worse["registry_state"]["champion_compared"]["version"] == 1
    assert client.get_registered_model(NAME).aliases == {"champion": 1, "challenger": 2}

    promote.main()                                     # same inputs: same comparison, same file, no new version
    assert json.loads(out_file.read_text()) == worse
    assert len(client.search_model_versions(f"name='{NAME}'")) == 2

    Path("models/metadata.json").write_text(original)  # version 1 again: its own first decision, reproduced
    promote.main()
    assert json.loads(out_file.read_text()) == first
    assert len(client.search_model_versions(f"name='{NAME}'")) == 2
    assert client.get_registered_model(NAME).aliases == {"champion": 1, "challenger": 2}

    set_route(note="re-exported")                      # same routes, new content: ties pass the rule
    promote.main()
    better = json.loads(out_file.read_text())
    assert better["decision"] == "promoted" and better["alias"] == "champion" and better["changed"] == []
    assert better["challenger"]["version"] == 3 and better["mcnemar"]["b"] == better["mcnemar"]["c"] == 0
    assert client.get_registered_model(NAME).aliases == {"champion": 3, "challenger": 2}


def test_a_model_that_is_not_ready_is_never_made_champion(e2e_repo, tmp_path, monkeypatch):
    """reports/decision.json says not ready: promote refuses the first model (it waits as the challenger) and a
    better challenger alike, unless promote.allow_not_ready."""
    import mlflow

    from stages import promote

    uri = make_store(e2e_repo, tmp_path / "work", monkeypatch)
    client = mlflow.MlflowClient(uri)
    out_file = Path("reports/promotion.json")
    set_params(max_retake_share=0.5, min_images=5, allow_not_ready=False)
    set_ready(False)
    promote.main()
    refused = json.loads(out_file.read_text())
    assert refused["decision"] == "refused: not ready" and refused["alias"] == "challenger" and not refused["ready"]
    assert "not ready for the line" in refused["reason"] and "allow_not_ready" in refused["reason"]
    assert client.get_registered_model(NAME).aliases == {"challenger": 1}

    set_params(allow_not_ready=True)                   # the override, said in the reason
    promote.main()
    forced = json.loads(out_file.read_text())
    assert forced["decision"] == "first model" and "allow_not_ready is true" in forced["reason"]
    assert client.get_registered_model(NAME).aliases == {"champion": 1}

    set_params(allow_not_ready=False)
    set_ready(True)
    set_route(note="re-exported")                      # ready and as good: promoted
    promote.main()
    assert json.loads(out_file.read_text())["decision"] == "promoted"
    set_ready(False)
    set_route(note="re-exported again")                # as good but not ready: the champion stays
    promote.main()
    again = json.loads(out_file.read_text())
    assert again["decision"] == "refused: not ready" and client.get_registered_model(NAME).aliases["champion"] == 2
