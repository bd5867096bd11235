from pathlib import Path

import pytest

from inspection.fsutil import staged_outputs


def test_outputs_published_together(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "d"
    with staged_outputs(a, b) as out:
        out.path(a).write_text("{}")
        out.path(b).mkdir()
        assert not a.exists() and not b.exists()
    assert a.read_text() == "{}" and b.is_dir()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".partial")] == []


def test_failure_leaves_nothing(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.csv"
    a.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with staged_outputs(a, b) as out:
            out.path(a).write_text("new")
            raise KeyboardInterrupt
    assert a.read_text() == "old" and not b.exists()
    assert list(Path(tmp_path).glob(".partial*")) == []


def test_undeclared_output_rejected(tmp_path):
    with pytest.raises(KeyError):
        with staged_outputs(tmp_path / "a") as out:
            out.path(tmp_path / "b")


def test_stale_partials_from_a_killed_run_are_removed(tmp_path):
    stale = tmp_path / ".partial-deadbeef.model.keras"
    stale.write_text("half")
    with staged_outputs(tmp_path / "model.keras") as out:
        out.path(tmp_path / "model.keras").write_text("full")
    assert not stale.exists() and (tmp_path / "model.keras").read_text() == "full"


def test_sigterm_midway_leaves_no_output(tmp_path):
    import signal
    import subprocess
    import sys

    code = f"""
import time
from pathlib import Path
from inspection.runner.cli import cli
from inspection.fsutil import staged_outputs
def main():
    with staged_outputs(Path({str(tmp_path)!r}) / "out.csv") as out:
        out.path(Path({str(tmp_path)!r}) / "out.csv").write_text("half")
        print("writing", flush=True)
        time.sleep(30)
cli(main)()
"""
    from conftest import REPO
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143 and "interrupted (SIGTERM): nothing was published" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_no_publishing_after_a_stop_signal(tmp_path, monkeypatch):
    import signal

    from inspection import interrupts as errors

    a = tmp_path / "a.json"
    a.write_text("old")
    monkeypatch.setattr(errors, "_signal", signal.SIGINT)  # e.g. a Ctrl-C that something swallowed
    with pytest.raises(KeyboardInterrupt):
        with staged_outputs(a) as out:
            errors._signal = None
            out.path(a).write_text("new")
            errors._signal = signal.SIGINT
    assert a.read_text() == "old" and list(tmp_path.glob(".partial*")) == []


def test_a_signal_during_the_renames_waits_for_them(tmp_path, monkeypatch):
    import os
    import signal

    from inspection import interrupts as errors

    monkeypatch.setattr(errors, "_signal", None)
    monkeypatch.setattr(errors, "_published", False)
    monkeypatch.setattr(errors, "_note_signal", lambda s: setattr(errors, "_signal", s))  # no deadline thread
    real_replace, renamed = os.replace, []

    def replace(src, dst):
        if not renamed:
            errors._handler(signal.SIGTERM, None)  # SIGTERM right after the first rename started
        renamed.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    a, b = tmp_path / "a.json", tmp_path / "b.csv"
    with pytest.raises(KeyboardInterrupt):
        with staged_outputs(a, b) as out:
            out.path(a).write_text("new a")
            out.path(b).write_text("new b")
    assert a.read_text() == "new a" and b.read_text() == "new b"  # all outputs, not half
    assert errors._published
