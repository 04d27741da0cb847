"""`prpose demo --out DIR` never replaces what it did not write (issue 9, item 2)."""

import json

import numpy as np
import pytest

from prpose.cli import main

TINY = ["--config", "tiny", "--steps", "20", "--sequences", "10", "--queries", "2"]


def _snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_non_empty_out_is_refused_without_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "data").mkdir(parents=True)
    (out / "data" / "thesis.tex").write_text("years of work")
    before = _snapshot(out)
    assert main(["demo", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err and str(out) in err
    assert _snapshot(out) == before


@pytest.mark.parametrize("name, make", [
    ("data", lambda p: (p.mkdir(), (p / "manifest.json").write_text('{"format": "something-else"}'))),
    ("index", lambda p: (p.mkdir(), (p / "manifest.json").write_text("{}"), (p / "notes.txt").write_text("x"))),
    ("run", lambda p: (p.mkdir(), (p / "config.json").write_text("not json"))),
    ("queries.npz", lambda p: p.write_text("my own notes")),
    ("thesis.tex", lambda p: p.write_text("years of work")),
])
def test_overwrite_refuses_anything_the_demo_did_not_write(tmp_path, capsys, name, make):
    out = tmp_path / "demo"
    out.mkdir()
    make(out / name)
    before = _snapshot(out)
    assert main(["demo", "--out", str(out), "--overwrite", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and name in err and "not written by prpose demo" in err
    assert _snapshot(out) == before


def test_overwrite_replaces_an_earlier_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    # What an earlier demo leaves, in the formats the demo writes (a stale run with only its config).
    assert main(["prep", "synthetic", "--out", str(out / "data"), "--sequences", "4", "--frames", "10"]) == 0
    (out / "run").mkdir()
    from prpose.config import get_preset, save_config

    save_config(get_preset("tiny"), out / "run")
    (out / "index").mkdir()
    (out / "index" / "manifest.json").write_text(json.dumps({"format": "prpose-index", "version": 1}))
    np.savez(out / "queries.npz", keypoints=np.zeros((1, 17, 2)))
    (out / "matches.png").write_bytes(b"\x89PNG\r\n\x1a\n stale")
    capsys.readouterr()
    assert main(["demo", "--out", str(out), "--overwrite", *TINY]) == 0
    assert "demo finished" in capsys.readouterr().out
    from prpose.dataset import load_dataset

    assert load_dataset(out / "data").num_frames > 40  # 10 new sequences, not the 4 stale ones
    assert (out / "run" / "checkpoints").is_dir()
    assert len((out / "matches.png").read_bytes()) > 1000


def test_a_failing_step_is_one_line(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--config", "no-such-preset", "--steps", "2", "--sequences", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prpose demo: error:") and "no-such-preset" in err
