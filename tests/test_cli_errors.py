"""The CLI error contract (docs/ARCHITECTURE.md, issue 9 items 12 and 14): one handler for every command and
entry point; bad input or a failed file operation is one line naming the file and exit status 2; a bug is one
line with a hint; a closed stdout ends quietly."""

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from prpose.cli import main
from prpose.errors import EXIT_BROKEN_PIPE, run_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    data, run, index = root / "data", root / "run", root / "index"
    assert main(["prep", "synthetic", "--out", str(data), "--sequences", "6", "--frames", "20"]) == 0
    assert main(["train", "--config", "tiny", "--data", str(data), "--out", str(run), "--no-progress",
                 "--fast-compile", "--set", "steps=4", "eval_every=0", "checkpoint_every=4"]) == 0
    assert main(["index", "build", "--model", str(run), "--data", str(data), "--out", str(index)]) == 0
    from prpose.dataset import load_dataset

    dataset = load_dataset(data)
    np.savez(root / "q.npz", keypoints=np.asarray(dataset.keypoints2d[:40, 0]), profile="h36m17")
    return root


def _one_line(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert str(needle) in err, (needle, err)
    return err


def _query(pipeline, query, *extra):
    return main(["query", "--index", str(pipeline / "index"), "--input", str(query), *extra])


def test_string_keypoints_in_npz(pipeline, tmp_path, capsys):
    bad = tmp_path / "strings.npz"
    np.savez(bad, keypoints=np.full((2, 17, 2), "x"), profile="h36m17")
    assert _query(pipeline, bad) == 2
    _one_line(capsys, bad, "keypoints")


def test_string_keypoints_and_list_image_id_in_coco_json(pipeline, tmp_path, capsys):
    strings = tmp_path / "strings.json"
    strings.write_text(json.dumps([{"image_id": 1, "keypoints": ["a"] * 51}]))
    assert _query(pipeline, strings) == 2
    _one_line(capsys, strings)
    listed = tmp_path / "list_id.json"
    listed.write_text(json.dumps([{"image_id": [1, 2], "keypoints": [1.0] * 51}]))
    assert _query(pipeline, listed) == 2
    _one_line(capsys, listed, "image_id [1, 2]")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"run_dir": 7}', "\xff\xfe"])
def test_malformed_model_json(pipeline, tmp_path, capsys, content):
    import shutil

    index = tmp_path / "index"
    shutil.copytree(pipeline / "index", index)
    (index / "model.json").write_bytes(content.encode("latin-1"))
    assert main(["query", "--index", str(index), "--input", str(pipeline / "q.npz")]) == 2
    _one_line(capsys, index / "model.json", "pass --model")


@pytest.mark.parametrize("key, value", [("tables", ["train"]), ("tables", {"source": [1], "subject": [],
                                         "sequence": [], "split": []}), ("camera_names", 4), ("rigs", {"a": 1})])
def test_dataset_manifest_with_wrong_types(pipeline, tmp_path, capsys, key, value):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(pipeline / "data", data)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest[key] = value
    (data / "manifest.json").write_text(json.dumps(manifest))
    assert main(["summary", str(data)]) == 2
    _one_line(capsys, data / "manifest.json", key)


def test_output_that_is_a_directory(pipeline, tmp_path, capsys):
    assert main(["embed", "--model", str(pipeline / "run"), "--input", str(pipeline / "q.npz"),
                 "--output", str(tmp_path)]) == 2
    _one_line(capsys, f"--output {tmp_path}: is a directory")
    assert _query(pipeline, pipeline / "q.npz", "--plot", str(tmp_path)) == 2
    _one_line(capsys, f"--plot {tmp_path}: is a directory")
    assert main(["show", str(pipeline / "data"), "--out", str(tmp_path)]) == 2
    _one_line(capsys, f"--out {tmp_path}: is a directory")


@pytest.mark.parametrize("value", ["-0.1", "1.5", "nan"])
def test_score_threshold_must_be_a_fraction(pipeline, tmp_path, capsys, value):
    assert _query(pipeline, pipeline / "q.npz", "--score-threshold", value) == 2
    _one_line(capsys, f"--score-threshold {value}", "expected a number in [0, 1]")
    assert main(["embed", "--model", str(pipeline / "run"), "--input", str(pipeline / "q.npz"),
                 "--output", str(tmp_path / "e.npz"), "--score-threshold", value]) == 2
    _one_line(capsys, "--score-threshold")


def test_plot_prints_the_path_it_writes(pipeline, tmp_path, capsys):
    assert _query(pipeline, pipeline / "q.npz", "--k", "2", "--plot", str(tmp_path / "pics" / "matches")) == 0
    written = tmp_path / "pics" / "matches.png"
    assert f"wrote {written}\n" in capsys.readouterr().out
    assert written.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == ["matches.png"]
    assert main(["show", str(pipeline / "data"), "--out", str(tmp_path / "pics" / "frame")]) == 0
    assert f"wrote {tmp_path / 'pics' / 'frame.png'}\n" in capsys.readouterr().out
    assert (tmp_path / "pics" / "frame.png").read_bytes()[:4] == b"\x89PNG"


def test_disk_full_names_the_file_and_the_cause(pipeline, tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what write()/flush() raise: no file name

    monkeypatch.setattr(np, "savez", full)
    output = tmp_path / "e.npz"
    assert main(["embed", "--model", str(pipeline / "run"), "--input", str(pipeline / "q.npz"),
                 "--output", str(output)]) == 2
    _one_line(capsys, output, "No space left on device", "disk is full")
    assert list(tmp_path.iterdir()) == []  # no half-written temp file left behind


def test_unexpected_exception_is_one_line_with_a_hint(capsys, monkeypatch):
    def buggy(args):
        raise TypeError("'NoneType' object is not subscriptable")

    monkeypatch.delenv("PRPOSE_DEBUG", raising=False)
    assert run_command("prpose x", buggy, None) == 1
    _one_line(capsys, "prpose x: error: unexpected TypeError", "PRPOSE_DEBUG=1", "--debug")
    monkeypatch.setenv("PRPOSE_DEBUG", "1")
    assert run_command("prpose x", buggy, None) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("prpose x: error: unexpected TypeError")


def _script(*argv, stdin=None):
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("PRPOSE_DEBUG", None)
    return subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_script_entry_points_follow_the_contract(tmp_path):
    train = _script("train.py", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run"))
    assert train.returncode == 2 and train.stderr.count("\n") == 1, train.stderr
    assert train.stderr.startswith("prpose train: error:") and "missing" in train.stderr
    prep = _script("-m", "prpose.data_prep.synthetic", "--out", str(tmp_path / "d"), "--frames", "0")
    assert prep.returncode == 2 and prep.stderr == "prpose prep synthetic: error: --frames must be >= 1; got 0\n"


def test_broken_pipe_ends_quietly(pipeline):
    # `prpose query --json | head -1`: the reader closes the pipe after one line.
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from prpose.cli import main; sys.exit(main(sys.argv[1:]))",
         "query", "--index", str(pipeline / "index"), "--input", str(pipeline / "q.npz"), "--k", "50", "--json"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == EXIT_BROKEN_PIPE
    assert first.startswith((b"[", b"{")) and err == ""


def test_disk_full_while_training_or_preparing_names_the_output(pipeline, tmp_path, capsys, monkeypatch):
    """ENOSPC from write()/flush() names no file: the dataset or checkpoint being written is named instead."""
    import orbax.checkpoint as ocp

    from prpose import dataset as dataset_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(dataset_module.np, "save", full)
        assert main(["prep", "synthetic", "--out", str(tmp_path / "d"), "--sequences", "2", "--frames", "5"]) == 2
        _one_line(capsys, tmp_path / "d", "No space left on device", "disk is full")
    assert not (tmp_path / "d").exists()
    with monkeypatch.context() as patch:
        patch.setattr(ocp.CheckpointManager, "save", full)
        code = main(["train", "--config", "tiny", "--data", str(pipeline / "data"), "--out", str(tmp_path / "r"),
                     "--no-progress", "--fast-compile", "--set", "steps=2", "eval_every=0", "checkpoint_every=2"])
    assert code == 2
    _one_line(capsys, tmp_path.resolve() / "r" / "checkpoints" / "2", "No space left on device")
