"""prpose.atomic: the directory swap shared by indexes and datasets, its lock, and recovery after a real crash
(a child process killed between the two renames of a swap)."""

import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from prpose import atomic
from prpose.errors import PrposeError


def _is_toy(path):
    try:
        return json.loads((path / "manifest.json").read_text()).get("format") == "toy"
    except (OSError, ValueError):
        return False


def _write_toy(target, value, **kw):
    with atomic.replacing(target, is_ours=_is_toy, kind="toy folder", **kw) as tmp:
        (tmp / "value.txt").write_text(value)
        (tmp / "manifest.json").write_text(json.dumps({"format": "toy"}))


def _read_toy(target):
    atomic.recover(target, _is_toy)
    return (target / "value.txt").read_text()


# The child writes version A, then dies (os._exit, no cleanup) at the given point of writing version B.
CHILD = textwrap.dedent("""
    import json, os, pathlib, sys
    from prpose import atomic
    target, when = pathlib.Path(sys.argv[1]), sys.argv[2]
    def is_toy(p):
        return (p / "manifest.json").is_file()
    def write(value):
        with atomic.replacing(target, is_ours=is_toy, kind="toy folder") as tmp:
            (tmp / "value.txt").write_text(value)
            if when == "while-writing" and value == "B":
                os._exit(17)
            (tmp / "manifest.json").write_text(json.dumps({"format": "toy"}))
    write("A")
    real_rename, calls = os.rename, []
    def rename(a, b):
        calls.append(b)
        if when == "between-renames" and len(calls) == 2:
            os._exit(17)
        real_rename(a, b)
    os.rename = rename
    write("B")
""")


def _crash(target, when):
    result = subprocess.run([sys.executable, "-c", CHILD, str(target), when], capture_output=True, text=True)
    assert result.returncode == 17, result.stderr


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_swap_replaces_and_leaves_nothing_beside(tmp_path):
    target = tmp_path / "t"
    _write_toy(target, "A")
    _write_toy(target, "B")
    assert _read_toy(target) == "B" and _names(tmp_path) == ["t"]


def test_crash_between_renames_finishes_the_swap_on_next_read(tmp_path, capsys):
    target = tmp_path / "t"
    _crash(target, "between-renames")
    assert not target.exists()  # the failure mode of issue 9 item 4
    assert {n.split("-")[0] for n in _names(tmp_path)} == {".t.lock", ".t.old", ".t.tmp"}
    assert _read_toy(target) == "B"  # the new copy was complete: the swap is finished
    assert _names(tmp_path) == ["t"]
    assert "finished an interrupted replace" in capsys.readouterr().err


def test_crash_between_renames_without_the_new_copy_restores_the_old(tmp_path):
    target = tmp_path / "t"
    _crash(target, "between-renames")
    for name in _names(tmp_path):
        if name.startswith(".t.tmp-"):
            (tmp_path / name / "manifest.json").unlink()  # the new copy is incomplete
    assert _read_toy(target) == "A"
    assert _names(tmp_path) == ["t"]


def test_crash_while_writing_keeps_the_old_and_next_write_cleans_up(tmp_path):
    target = tmp_path / "t"
    _crash(target, "while-writing")
    assert _read_toy(target) == "A"
    live = tmp_path / f".t.tmp-{os.getpid()}-abc"  # owner alive (this process): not ours to delete
    unrelated = tmp_path / ".t.tmp-notes"
    live.mkdir(), unrelated.mkdir()
    _write_toy(target, "C")
    assert _read_toy(target) == "C"
    assert _names(tmp_path) == sorted(["t", live.name, unrelated.name])


def test_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    target = tmp_path / "t"
    held, release = threading.Event(), threading.Event()

    def first():
        with atomic.replacing(target, is_ours=_is_toy, kind="toy folder") as tmp:
            (tmp / "manifest.json").write_text(json.dumps({"format": "toy"}))
            held.set()
            release.wait(30)

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(30)
    try:
        with pytest.raises(PrposeError, match=r"t: another process is writing it \(lock .*\.t\.lock is held"):
            _write_toy(target, "B")
    finally:
        release.set()
        thread.join()
    assert _is_toy(target) and _names(tmp_path) == ["t"]


def test_new_target_that_appeared_meanwhile_is_not_replaced_without_overwrite(tmp_path):
    target = tmp_path / "t"
    _write_toy(target, "A")
    with pytest.raises(PrposeError, match="already holds a toy folder"):
        _write_toy(target, "B", overwrite=False)
    assert _read_toy(target) == "A"


def test_check_target_refuses_foreign_folders(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "manifest.json").write_text(json.dumps({"format": "prpose-dataset"}))
    with pytest.raises(PrposeError, match=r"not a toy folder.*'prpose-dataset'\); refusing"):
        _write_toy(tmp_path / "notes", "A")
    (tmp_path / "file").write_text("x")
    with pytest.raises(PrposeError, match="not a directory"):
        _write_toy(tmp_path / "file", "A")
    assert (tmp_path / "notes" / "manifest.json").is_file() and (tmp_path / "file").read_text() == "x"


def test_read_only_location_explains_where_the_old_copy_is(tmp_path, monkeypatch):
    target = tmp_path / "t"
    _crash(target, "between-renames")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic, "_try_lock", refuse)
    with pytest.raises(PrposeError, match=r"t: missing; an interrupted replace left the previous copy at .*\.t\.old-"):
        atomic.recover(target, _is_toy)


DATASET_CHILD = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[2])
    from test_dataset import _arrays
    from prpose import dataset as ds
    ds.write_dataset(sys.argv[1], **_arrays(n=7))
    real_rename, calls = os.rename, []
    def rename(a, b):
        calls.append(b)
        if len(calls) == 2:
            os._exit(17)
        real_rename(a, b)
    os.rename = rename
    ds.write_dataset(sys.argv[1], **_arrays(n=5, seed=1), overwrite=True)
""")


def test_dataset_write_killed_between_renames_is_repaired_by_load(tmp_path):
    from pathlib import Path

    from prpose import dataset as ds

    target = tmp_path / "d"
    result = subprocess.run([sys.executable, "-c", DATASET_CHILD, str(target), str(Path(__file__).parent)],
                            capture_output=True, text=True)
    assert result.returncode == 17, result.stderr
    assert not target.exists()
    assert len(ds.load_dataset(target)) == 5
    assert _names(tmp_path) == ["d"]


def test_unwritable_parent_is_a_one_line_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic, "_try_lock", refuse)
    with pytest.raises(PrposeError, match=r"t: cannot create its lock file .*\.t\.lock \(Permission denied\)"):
        _write_toy(tmp_path / "t", "A")


def test_reader_waits_for_a_live_swap_and_names_a_stuck_old_copy(tmp_path, monkeypatch):
    target = tmp_path / "t"
    _write_toy(target, "A")
    old = tmp_path / f".t.old-{os.getpid()}-abc"  # this process is alive: as if it were between its renames
    target.rename(old)
    monkeypatch.setattr(atomic, "SWAP_WAIT_S", 0.05)
    with pytest.raises(PrposeError, match=rf"t: no such directory; the copy replaced by process {os.getpid()} is at"):
        atomic.open_dir(target, "a toy folder")
    timer = threading.Timer(0.02, lambda: old.rename(target))  # the "writer" finishes its swap
    monkeypatch.setattr(atomic, "SWAP_WAIT_S", 5.0)
    timer.start()
    fd = atomic.open_dir(target, "a toy folder")
    os.close(fd)
    timer.join()
