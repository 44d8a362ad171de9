"""Atomic replacement of files that others read (metrics, CSV exports)."""
from __future__ import annotations

import stat

import pytest

from enrich.files import replace_atomically


def test_replaces_the_file_whole_and_readable_by_others(tmp_path):
    target = tmp_path / "metrics.prom"
    target.write_bytes(b"old")
    replace_atomically(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.prom"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "export.csv"
    target.write_bytes(b"old")

    def refuse(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("enrich.files.os.replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        replace_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["export.csv"]


def test_a_missing_directory_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        replace_atomically(tmp_path / "nope" / "metrics.prom", b"x")
