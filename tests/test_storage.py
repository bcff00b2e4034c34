"""Atomic writes: all or nothing, with the permissions a plain write gives."""

from __future__ import annotations

import os
import stat

import pytest

from tvts.storage import atomic_path, atomic_write_text, current_umask


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        plain, atomic = tmp_path / "plain.txt", tmp_path / "atomic.txt"
        plain.write_text("x")
        atomic_write_text(atomic, "x")
        with atomic_path(tmp_path / "tool.bin") as tmp:
            tmp.write_bytes(b"x")  # a tool writing into the temp file it is given
    finally:
        os.umask(old)
    want = stat.S_IMODE(plain.stat().st_mode)
    assert want == 0o666 & ~umask
    assert stat.S_IMODE(atomic.stat().st_mode) == want
    assert stat.S_IMODE((tmp_path / "tool.bin").stat().st_mode) == want


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("cut")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]
