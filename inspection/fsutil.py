"""Atomic outputs, hashing and small file helpers shared by the stages.

A stage writes every output into a staging area and publishes them all at the
end with renames, so an error or Ctrl-C midway leaves no half-written output.
Once a stop signal arrived (inspection.errors), nothing is published any more, and a
signal arriving during the renames waits until they are done.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence
from inspection.errors import UserError, disk_error_message
from inspection.interrupts import check_interrupted, publishing


class StagedOutputs:
    """Hands out temporary paths for the declared outputs; publishes them on commit."""

    def __init__(self, outputs: Sequence[Path | str]):
        self.outputs = [Path(p) for p in outputs]
        self._tmp: dict[Path, Path] = {}
        token = uuid.uuid4().hex[:8]
        for out in self.outputs:
            for stale in out.parent.glob(f".partial-*.{out.name}"):  # left by a run killed with SIGKILL
                remove(stale)
            self._tmp[out] = out.parent / f".partial-{token}.{out.name}"  # keeps the suffix (.keras, .json)

    def path(self, output: Path | str) -> Path:
        """Temporary location to write ``output`` to (its parent folder exists)."""
        out = Path(output)
        if out not in self._tmp:
            raise KeyError(f"{out} is not a declared output of this stage")
        check_interrupted()
        try:
            self._tmp[out].parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            message = disk_error_message(exc, "create the folder")
            if message is None:
                raise
            raise UserError(message) from None
        return self._tmp[out]

    def commit(self) -> None:
        check_interrupted()  # a stop signal, even one swallowed on its way, means: publish nothing
        missing = [str(o) for o, t in self._tmp.items() if not t.exists()]
        if missing:
            raise RuntimeError(f"stage did not write its outputs: {missing}")
        with publishing():  # a signal during the renames is acted on after them: all outputs or none
            for out, tmp in self._tmp.items():
                remove(out)
                os.replace(tmp, out)

    def discard(self) -> None:
        for tmp in self._tmp.values():
            remove(tmp)


@contextlib.contextmanager
def staged_outputs(*outputs: Path | str) -> Iterator[StagedOutputs]:
    """``with staged_outputs("a.json", "dir") as out: write(out.path("a.json"))``."""
    staged = StagedOutputs(outputs)
    try:
        yield staged
        staged.commit()
    finally:
        staged.discard()


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def sha256_file(path: Path | str, chunk: int = 1 << 20, progress=None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            if progress is not None:
                progress.update(len(block))
    return h.hexdigest()


def dir_size(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: object) -> object:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return obj.as_posix()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: Path | str) -> dict:
    return json.loads(Path(path).read_text())


def write_csv(path: Path, rows: Iterable[Mapping[str, object]], fieldnames: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fieldnames), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def read_csv(path: Path | str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
