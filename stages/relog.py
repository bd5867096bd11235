"""Re-log what stages kept while the MLflow store was unreachable (``.mlflow-pending/`` in the workspace).

    python -m stages.relog                 # replay every kept log into the store it was meant for
    python -m stages.relog --uri URI       # ... into another store (e.g. the server is now elsewhere)
    python -m stages.relog --new-run       # the run is gone from the store (database replaced): log into a new
                                           # run of the same experiment, tagged relogged_from_run_id
    python -m stages.relog --list          # only show what is waiting

Each journal is replayed in order and removed when done; a replay that stops half-way resumes where it
stopped (the count of replayed entries is kept in ``done``).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from stages.errors import UserError, check_interrupted, cli
from stages.tracking import (_fixes, _mlflow, _reason, apply_entry, configure_http, pending_journals,
                             pending_root, store_problem)


def read_journal(folder: Path) -> tuple[dict, list[dict]]:
    lines = [json.loads(line) for line in (folder / "journal.jsonl").read_text().splitlines() if line.strip()]
    if not lines or lines[0].get("op") != "header":
        raise UserError(f"{folder}/journal.jsonl has no header; move the folder away")
    return lines[0], lines[1:]


def _new_run(client, header: dict) -> str:
    name = header.get("experiment") or "relogged"
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    run = client.create_run(exp_id, tags={"relogged_from_run_id": header["run_id"]})
    return run.info.run_id


def relog(folder: Path, uri: str | None, new_run: bool) -> str:
    from mlflow.tracking import MlflowClient

    header, entries = read_journal(folder)
    target = uri or header["uri"]
    problem = store_problem(target)
    if problem:
        raise UserError(f"MLflow tracking store {target} cannot be used: {problem}; {_fixes(target)}")
    client = MlflowClient(target)
    done_file = folder / "done"
    done = int(done_file.read_text()) if done_file.exists() else 0
    run_id = header.get("relog_run_id") or header["run_id"]
    try:
        client.get_run(run_id)
    except Exception as exc:
        if not new_run:
            raise UserError(f"run {run_id} is not in {target} ({_reason(exc)}); the store was replaced or the run "
                            "deleted: re-log into a new run with --new-run") from None
        run_id = _new_run(client, header)
        header["relog_run_id"] = run_id
        lines = [json.dumps(header)] + [json.dumps(e) for e in entries]
        (folder / "journal.jsonl").write_text("\n".join(lines) + "\n")
    for i, entry in enumerate(entries):
        if i < done:
            continue
        check_interrupted()
        try:
            apply_entry(client, run_id, entry, base=folder)
        except Exception as exc:
            raise UserError(f"re-logging {folder.name} stopped at entry {i + 1} of {len(entries)} ({_reason(exc)}); "
                            f"{_fixes(target)}, then run python -m stages.relog again") from None
        done_file.write_text(str(i + 1))
    shutil.rmtree(folder)
    return f"relog: {header.get('stage') or 'stage'} ({len(entries)} entries) -> run {run_id} in {target}"


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.relog", description=__doc__.splitlines()[0])
    ap.add_argument("--uri", help="tracking URI to log into (default: the one each stage used)")
    ap.add_argument("--new-run", action="store_true", help="log into a new run when the original run is gone")
    ap.add_argument("--list", action="store_true", help="only list what is waiting")
    args = ap.parse_args()
    configure_http()
    _mlflow()
    journals = pending_journals()
    if not journals:
        print(f"relog: nothing is waiting in {pending_root()}")
        return
    for folder in journals:
        if args.list:
            header, entries = read_journal(folder)
            print(f"{folder.name}: {header.get('stage')} run {header['run_id']} in {header['uri']}, "
                  f"{len(entries)} entries (kept because: {header.get('reason')})")
            continue
        print(relog(folder, args.uri, args.new_run))


if __name__ == "__main__":
    cli(main)()
