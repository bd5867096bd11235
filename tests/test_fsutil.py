from pathlib import Path

import pytest

from stages.fsutil import staged_outputs


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
