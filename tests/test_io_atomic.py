"""Reports and logs are replaced atomically: a failure leaves the old file and no debris."""

from __future__ import annotations

import os

import pytest

from growlm.io.atomic import write_text_atomic


def test_replaces_content(tmp_path):
    f = tmp_path / "summary.json"
    f.write_text("old")
    write_text_atomic(f, "new")
    assert f.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_failure_keeps_old_file(tmp_path, monkeypatch):
    f = tmp_path / "summary.json"
    f.write_text("old")

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_text_atomic(f, "new")
    assert f.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
