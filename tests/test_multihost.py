"""Multi-process data parallel training on CPU (jax.distributed, gloo collectives): two processes, each holding
half of the dataset's frames, train exactly what one process trains (the same batches; losses equal up to float
reduction order), and only process 0 writes files and prints."""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

STEPS = 6
TRAIN = ["train", "--config", "tiny", "--no-progress", "--fast-compile", "--set", f"train.steps={STEPS}",
         f"train.log_every=1", f"train.eval_every={STEPS}", "train.checkpoint_every=3", "train.batch_size=16"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    return env


def _layout(run):
    """The run's files, checkpoints down to their items (inside those, Orbax keeps per-process metadata)."""
    return sorted({"/".join(p.relative_to(run).parts[:3]) for p in run.rglob("*") if p.is_file()})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from prpose.eval.testing import tiny_dataset

    path = tmp_path_factory.mktemp("multihost") / "ds"
    # 5 train sequences of 11 frames: 55 frames, not a multiple of 2, so the two shares are padded.
    tiny_dataset(path, sequences=6, frames=11, splits=("train", "train", "train", "val", "train", "train"))
    return path


def test_two_processes_train_like_one_and_only_process_0_writes(data, tmp_path):
    cmd = [sys.executable, "-m", "prpose.cli"]
    started = time.perf_counter()
    one = subprocess.run(cmd + TRAIN + ["--data", str(data), "--out", str(tmp_path / "one")], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    port = _free_port()
    procs = [subprocess.Popen(cmd + TRAIN + ["--data", str(data), "--out", str(tmp_path / "two"), "--distributed",
                                             "--coordinator", f"localhost:{port}", "--num-processes", "2",
                                             "--process-id", str(i)],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    print(f"1 + 2 processes: {time.perf_counter() - started:.1f} s")

    # Only process 0 printed (gloo's own connection line aside); it printed what the single process printed.
    assert [line for line in outs[1][0].splitlines() if not line.startswith("[Gloo]")] == []
    assert outs[0][0].splitlines()[-1].startswith(f"done: step {STEPS}")
    # One set of files: the same as the single-process run's, each metrics row once.
    assert _layout(tmp_path / "two") == _layout(tmp_path / "one")
    rows = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("one", "two")}
    assert [r["step"] for r in rows["two"]] == [r["step"] for r in rows["one"]]
    loss = {name: np.array([r["loss"] for r in rows[name] if "loss" in r]) for name in rows}
    assert loss["one"].shape == (STEPS,)
    # Same batches and augmentation; only the order of float reductions over devices differs.
    np.testing.assert_allclose(loss["two"], loss["one"], rtol=1e-5, atol=1e-6)
    assert (tmp_path / "two" / "config.json").read_text() == (tmp_path / "one" / "config.json").read_text()
    evals = [r["eval"] for r in rows["two"] if "eval" in r]
    assert len(evals) == 1 and evals[-1]["num_frames"] == [r["eval"] for r in rows["one"] if "eval" in r][-1][
        "num_frames"]
    print(f"max |loss difference| over {STEPS} steps: {np.abs(loss['two'] - loss['one']).max():.2e}")
    # The checkpoint restores, and its weights are the single process's up to float noise. Not the dense biases
    # in front of a batch norm: the norm removes them, so their gradient is pure rounding noise, which Adam
    # normalises into steps of +-learning_rate whose signs depend on the order of float reductions.
    from prpose.config import load_config
    from prpose.training import final_state

    config = load_config(tmp_path / "one")
    params = [jax.tree_util.tree_flatten_with_path(final_state(tmp_path / name, config)[1]["params"])[0]
              for name in ("one", "two")]
    for (path, a), (_, b) in zip(*params):
        if "['dense']['bias']" not in jax.tree_util.keystr(path):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5,
                                       err_msg=jax.tree_util.keystr(path))
