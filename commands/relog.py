"""Re-log into MLflow what stages kept in .mlflow-pending/ while the tracking store was unreachable.

    python -m commands.relog [--uri URI] [--new-run] [--list]

Replays each waiting journal into the store it was meant for (or --uri); --new-run logs into a new run of the
same experiment when the original run is gone; --list only shows what is waiting (stage, run, store, entries
and why it was kept). The journals and their replay are inspection.tracking.journal's.
"""
from __future__ import annotations

import argparse
from inspection.runner.cli import cli
from inspection.tracking.store import mlflow_api, configure_http
from inspection.tracking.journal import pending_journals, pending_root
from inspection.tracking.journal import read_journal, relog


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m commands.relog", description=__doc__.splitlines()[0])
    ap.add_argument("--uri", help="tracking URI to log into (default: the one each stage used)")
    ap.add_argument("--new-run", action="store_true", help="log into a new run when the original run is gone")
    ap.add_argument("--list", action="store_true", help="only list what is waiting")
    args = ap.parse_args()
    configure_http()
    mlflow_api()
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
