"""Resuming a run: a refused resume writes nothing; damaged checkpoints are named and skipped (issue 9, 3/13/14)."""

import argparse
import pathlib
import shutil

import pytest

from prpose import checkpoint as ckpt
from prpose.cli import main

TRAIN = ["--config", "tiny", "--no-progress", "--fast-compile"]
SETTINGS = ["steps=20", "eval_every=0", "checkpoint_every=10", "keep_checkpoints=3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from prpose.data_prep import synthetic

    root = tmp_path_factory.mktemp("resume")
    assert synthetic.main(argparse.Namespace(out=str(root / "data"), sequences=10, frames=30, seed=0, rig="h36m",
                                             cameras=4, overwrite=False)) == 0
    assert main(["train", *TRAIN, "--data", str(root / "data"), "--out", str(root / "run"), "--set", *SETTINGS]) == 0
    assert ckpt.complete_steps(root / "run") == [10, 20]
    return root


def _copy_run(trained, tmp_path) -> pathlib.Path:
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    return run


def _damage(step_dir: pathlib.Path) -> None:
    """Flip every 7th byte of the array data files of one checkpoint (what a bad disk or copy does)."""
    for f in step_dir.rglob("*"):
        if f.is_file() and f.parent.name == "d":
            data = bytearray(f.read_bytes())
            data[::7] = bytes(b ^ 0xFF for b in data[::7])
            f.write_bytes(bytes(data))


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_refused_resume_writes_nothing_and_the_run_stays_resumable(trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path)
    before = _files(run)
    capsys.readouterr()
    code = main(["train", "--no-progress", "--fast-compile", "--data", str(trained / "data"), "--out", str(run),
                 "--resume", "--set", "optimizer=sgd", "steps=30"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "optimizer: checkpoint has 'adam', config has 'sgd'" in err
    assert _files(run) == before  # config.json included: the failed resume changed nothing
    # The run still resumes with its own config.
    assert main(["train", "--no-progress", "--fast-compile", "--data", str(trained / "data"), "--out", str(run),
                 "--resume", "--set", "steps=30"]) == 0
    assert ckpt.latest_step(run) == 30


def test_damaged_latest_checkpoint_is_named_and_the_previous_one_is_used(trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path)
    _damage(run / "checkpoints" / "20")
    capsys.readouterr()
    assert main(["train", "--no-progress", "--fast-compile", "--data", str(trained / "data"), "--out", str(run),
                 "--resume", "--set", "steps=30"]) == 0
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "Traceback" not in printed and "Event loop is closed" not in printed
    assert f"checkpoint {run.resolve() / 'checkpoints' / '20'} (step 20) is damaged" in printed
    assert "newest intact checkpoint instead" in printed and "(step 10)" in printed
    assert (run / "checkpoints" / "20.damaged").is_dir()  # kept for inspection, never loaded
    assert ckpt.complete_steps(run)[-1] == 30  # step 20 was trained again from step 10, and saved


def test_load_model_falls_back_and_says_so(trained, tmp_path):
    from prpose.inference import load_model

    run = _copy_run(trained, tmp_path)
    _damage(run / "checkpoints" / "20")
    said = []
    model = load_model(run, log=said.append)
    assert model.step == 10
    assert len(said) == 2 and "(step 20) is damaged" in said[0] and "(step 10)" in said[1]
    assert (run / "checkpoints" / "20").is_dir()  # inference never moves files


def test_every_checkpoint_damaged_is_one_line_naming_each(trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path)
    for step in (10, 20):
        _damage(run / "checkpoints" / str(step))
    before = _files(run)
    capsys.readouterr()
    code = main(["train", "--no-progress", "--fast-compile", "--data", str(trained / "data"), "--out", str(run),
                 "--resume", "--set", "steps=30"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "no intact checkpoint" in err and "step 20" in err and "step 10" in err
    assert _files(run) == before


def test_resume_without_checkpoint_says_it_starts_from_scratch(trained, tmp_path, capsys):
    run = tmp_path / "fresh"
    assert main(["train", *TRAIN, "--data", str(trained / "data"), "--out", str(run), "--resume",
                 "--set", "steps=2", "eval_every=0"]) == 0
    assert "holds no complete checkpoint; starting a new run from step 0" in capsys.readouterr().out
