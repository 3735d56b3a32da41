"""Output folders: refused before the work when they cannot or must not be written, left
with the user's usual permissions, and what killed runs left is cleaned up next time."""

import os

import pytest

from tpa_compress.errors import TPAError
from tpa_compress.save.atomic import atomic_output_dir, check_output_dir, check_output_file, clean_leftovers

DEAD_PID = 2**22 + 12345  # above Linux's pid_max default: no such process


def test_file_as_output_is_refused_even_with_force(tmp_path):
    f = tmp_path / "out"
    f.write_text("keep me")
    for force in (False, True):
        with pytest.raises(TPAError, match="is a file, not a folder"):
            check_output_dir(f, force)
    assert f.read_text() == "keep me"


def test_force_replaces_only_a_previous_output(tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_text("x")
    with pytest.raises(TPAError, match="replaces only a previous output"):
        check_output_dir(other, force=True)
    prev = tmp_path / "prev"
    prev.mkdir()
    (prev / "report.json").write_text("{}")
    with pytest.raises(TPAError, match="pass --force"):
        check_output_dir(prev)
    check_output_dir(prev, force=True)


def test_unwritable_parent_is_refused_before_work(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TPAError, match="not a folder"):
        check_output_dir(blocker / "sub" / "out")
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(TPAError, match="cannot write in"):
        check_output_dir(tmp_path / "new" / "out")
    with pytest.raises(TPAError, match="--json .*cannot write there"):
        check_output_file(tmp_path / "r.json", "--json")


def test_output_has_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_output_dir(tmp_path / "out") as tmp:
            (tmp / "report.json").write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


def test_leftovers_of_killed_runs_are_cleaned(tmp_path):
    out = tmp_path / "out"
    stale = tmp_path / f".out.tmp-{DEAD_PID}-abcd"
    stale.mkdir()
    (stale / "model.safetensors").write_text("half")
    mine = tmp_path / f".out.tmp-{os.getpid()}-efgh"  # a live writer's folder stays
    mine.mkdir()
    moved = tmp_path / f".out.old-{DEAD_PID}"  # killed between the two renames of a swap
    moved.mkdir()
    (moved / "report.json").write_text("{}")
    done = clean_leftovers(out)
    assert not stale.exists() and mine.exists() and not moved.exists()
    assert (out / "report.json").exists(), "the previous output is put back"
    assert len(done) == 2 and any("restored" in d for d in done)
    assert clean_leftovers(out) == []
