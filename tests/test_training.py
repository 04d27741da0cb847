"""The training loop: one step's effect, exact resume, kill-and-resume via the CLI, 1 vs 2 devices."""

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from prpose import checkpoint as ckpt
from prpose.config import from_overrides
from prpose.errors import PrposeError
from prpose.training import (create_train_state, final_state, make_optimizer, make_schedule, read_metrics,
                             train_and_evaluate, train_step)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = {"xla_backend_optimization_level": 0}  # halves compile time; these tests check values, not speed
# One tiny config shared by the tests so that the persistent compilation cache serves them all.
TINY = ["train.eval_every=0", "train.log_every=5", "train.checkpoint_every=10"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from prpose.data_prep import synthetic

    out = tmp_path_factory.mktemp("data") / "synthetic"
    rc = synthetic.main(argparse.Namespace(out=str(out), sequences=12, frames=30, seed=0, rig="h36m", cameras=4,
                                           overwrite=False))
    assert rc == 0
    return out


def _losses(workdir):
    return [(r["step"], r["loss"]) for r in read_metrics(workdir) if "loss" in r]


def test_one_step_updates_params_match_params_and_ema(data_dir):
    from prpose.pairs import load_train_arrays

    config = from_overrides("tiny", TINY)
    arrays, _ = load_train_arrays(data_dir, "train")
    tx = make_optimizer(config)
    graphdef, _, state, ema = create_train_state(config, tx)
    p0 = jax.tree.map(np.asarray, state.params)
    step = jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx, config=config), compiler_options=FAST)
    new_state, new_ema, metrics = step(state, ema, arrays)
    assert int(new_state.step) == 1
    for name in ("loss", "triplet", "positive", "kl", "active_fraction", "valid_fraction", "a", "b", "grad_norm"):
        assert np.isfinite(float(metrics[name])), name
    assert 0.0 < float(metrics["valid_fraction"]) <= 1.0
    # Gradients reach the match parameters (they live on the model and are trained with it).
    assert float(new_state.params["raw_a"][...]) != float(p0["raw_a"][...])
    assert float(new_state.params["b"][...]) != float(p0["b"][...])
    # EMA warm-up: decay at step 0 is min(0.9, 1/10) = 0.1, so ema = 0.1 * init + 0.9 * new params.
    for e, init, new in zip(jax.tree.leaves(new_ema["params"]), jax.tree.leaves(p0),
                            jax.tree.leaves(new_state.params)):
        np.testing.assert_allclose(np.asarray(e), 0.1 * init + 0.9 * np.asarray(new), rtol=1e-6, atol=1e-7)
    # Batch statistics moved (train mode) and were copied to the EMA tree.
    for s, e in zip(jax.tree.leaves(new_state.batch_stats), jax.tree.leaves(new_ema["batch_stats"])):
        np.testing.assert_array_equal(np.asarray(s), np.asarray(e))
    assert any(not np.allclose(np.asarray(s), 0) and not np.allclose(np.asarray(s), 1)
               for s in jax.tree.leaves(new_state.batch_stats))


def test_schedules_match_closed_form():
    config = from_overrides("tiny", ["train.schedule=warmup_cosine", "train.steps=110", "train.warmup_steps=10",
                                     "train.learning_rate=0.1", "train.final_lr_fraction=0.01"])
    lr = make_schedule(config)
    assert float(lr(0)) == pytest.approx(0.0)
    assert float(lr(5)) == pytest.approx(0.05)
    assert float(lr(10)) == pytest.approx(0.1)
    # Cosine from 0.1 down to 0.001 over the remaining 100 steps: halfway is the mean of the two.
    assert float(lr(60)) == pytest.approx((0.1 + 0.001) / 2, rel=1e-5)
    assert float(lr(110)) == pytest.approx(0.001, rel=1e-5)
    assert float(make_schedule(from_overrides("tiny", ["train.learning_rate=0.02"]))(1000)) == pytest.approx(0.02)


def test_resume_gives_identical_params_and_losses(data_dir, tmp_path):
    config = from_overrides("tiny", TINY + ["train.steps=40"])
    quiet = dict(progress=False, log=lambda *_: None, compiler_options=FAST)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_and_evaluate(config, data_dir, straight, **quiet)
    train_and_evaluate(config, data_dir, split, stop_at=20, **quiet)
    assert ckpt.latest_step(split) == 20
    train_and_evaluate(config, data_dir, split, resume=True, **quiet)

    assert _losses(straight) == _losses(split)  # same floats, not just close
    assert [s for s, _ in _losses(split)] == list(range(5, 45, 5))
    state_a, ema_a = final_state(straight, config)
    state_b, ema_b = final_state(split, config)
    assert int(state_a.step) == int(state_b.step) == 40
    for x, y in zip(jax.tree.leaves(ckpt.to_storable((state_a, ema_a))),
                    jax.tree.leaves(ckpt.to_storable((state_b, ema_b)))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    # The loss goes down (means over 5 steps; deterministic for this seed).
    losses = [loss for _, loss in _losses(straight)]
    assert np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.02, losses

    # A finished run is refused without --resume; a resume with another architecture is refused.
    with pytest.raises(PrposeError, match="already holds checkpoints"):
        train_and_evaluate(config, data_dir, straight, **quiet)
    wider = from_overrides(config, ["model.width=64"])
    with pytest.raises(PrposeError, match="model.width: checkpoint has 32, config has 64"):
        train_and_evaluate(wider, data_dir, straight, resume=True, **quiet)


def _train_cli(args, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), "--no-progress", "--fast-compile",
                             *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kwargs)


def test_cli_kill_and_resume_continues_from_checkpoint(data_dir, tmp_path):
    out = tmp_path / "run"
    start = time.perf_counter()
    # A run far too long to finish: killed (SIGKILL, no clean-up) once it has written a checkpoint.
    proc = _train_cli(["--config", "tiny", "--data", str(data_dir), "--out", str(out), "--set", *TINY,
                       "train.steps=1000000"])
    try:
        deadline = time.time() + 240
        while ckpt.latest_step(out) is None and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[0]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = ckpt.latest_step(out)
    assert killed_at is not None and killed_at % 10 == 0

    # Resume with the run's own config (no --config), a finite length and validation at the end.
    target = killed_at + 60
    proc = _train_cli(["--data", str(data_dir), "--out", str(out), "--resume", "--set", f"train.steps={target}",
                       f"train.eval_every={target}"])
    output = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, output
    assert f"resumed from {ckpt.checkpoint_dir(out) / str(killed_at)}" in output
    assert f"done: step {target}" in output
    assert ckpt.latest_step(out) == target
    rows = read_metrics(out)
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(5, target + 5, 5))  # rows the killed run logged after its checkpoint were dropped
    assert [r for r in rows if "eval" in r][-1]["eval"]["hit@1"] > 0
    losses = [r["loss"] for r in rows if "loss" in r]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.02, losses
    assert time.perf_counter() - start < 240


_TWO_DEVICES = textwrap.dedent("""
    import json, sys
    import jax
    from prpose.config import from_overrides
    from prpose.training import read_metrics, train_and_evaluate
    assert len(jax.devices()) == 2, jax.devices()
    config = from_overrides("tiny", sys.argv[3:])
    curves = {}
    for n in (1, 2):
        out = f"{sys.argv[2]}/run{n}"
        train_and_evaluate(config, sys.argv[1], out, progress=False, log=lambda *_: None,
                           devices=jax.devices()[:n], compiler_options={"xla_backend_optimization_level": 0})
        curves[n] = [[r["step"], r["loss"], r["active_fraction"]] for r in read_metrics(out) if "loss" in r]
    print("CURVES" + json.dumps(curves))
""")


def test_one_and_two_devices_give_the_same_loss_curve(data_dir, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    result = subprocess.run([sys.executable, "-c", _TWO_DEVICES, str(data_dir), str(tmp_path), *TINY,
                             "train.steps=20"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    curves = json.loads(result.stdout.split("CURVES", 1)[1])
    one, two = np.array(curves["1"]), np.array(curves["2"])
    assert one.shape == two.shape == (4, 3)
    np.testing.assert_allclose(two, one, rtol=2e-4, atol=1e-5)


def test_temporal_windows_train(data_dir, tmp_path):
    config = from_overrides("tiny", TINY + ["train.steps=10", "train.window=3", "train.eval_every=5"])
    messages = []
    last = train_and_evaluate(config, data_dir, tmp_path / "temporal", progress=False, log=messages.append,
                              compiler_options=FAST)
    assert last["step"] == 10 and np.isfinite(last["loss"])
    assert any("windows" in m for m in messages)  # the load report counts them
    # Validated cross-view on windows: the window hit test (mean NP-MPJPE over the window) and the frame test.
    assert last["eval"]["window"] == 3 and last["eval"]["hit"] == "window"
    assert 0 <= last["eval"]["hit@1"] <= last["eval"]["hit@10"] <= 1 and 0 <= last["eval"]["frame_hit@1"] <= 1
    assert last["eval"]["num_frames"] > 0
    state, _ = final_state(tmp_path / "temporal", config)
    assert int(state.step) == 10


def test_temporal_run_starts_from_a_per_frame_run(data_dir, tmp_path):
    """train.init_from: the temporal run starts as the per-frame model on the centre frame (prpose.windows)."""
    frame_config = from_overrides("tiny", TINY + ["train.steps=5"])
    train_and_evaluate(frame_config, data_dir, tmp_path / "frame", progress=False, log=lambda m: None,
                       compiler_options=FAST)
    config = from_overrides("tiny", TINY + ["train.steps=5", "train.window=3", f"train.init_from={tmp_path / 'frame'}"])
    messages = []
    last = train_and_evaluate(config, data_dir, tmp_path / "temporal", progress=False, log=messages.append,
                              compiler_options=FAST)
    assert last["step"] == 5 and any("init_from" in m and "centre frame" in m for m in messages)
    bad = from_overrides("tiny", TINY + ["train.steps=5", "train.window=3", "model.width=48",
                                         f"train.init_from={tmp_path / 'frame'}"])
    with pytest.raises(PrposeError, match="init_from"):
        train_and_evaluate(bad, data_dir, tmp_path / "bad", progress=False, log=lambda m: None, compiler_options=FAST)


def test_occlusion_with_visible_joint_labels_and_mask_input_trains(data_dir, tmp_path):
    """Keypoint dropout (random + structured), the visibility mask as input, labels on visible joints only."""
    config = from_overrides("tiny", TINY + [
        "train.steps=10", "augment.dropout_p_apply=0.5", "augment.structured_probability=0.5",
        "augment.emit_visibility=true", "model.mask_mode=both", "loss.labels_visible_only=true"])
    last = train_and_evaluate(config, data_dir, tmp_path / "occluded", progress=False, log=lambda m: None,
                              compiler_options=FAST)
    assert last["step"] == 10 and np.isfinite(last["loss"])
    assert 0.0 < last["valid_fraction"] <= 1.0


def test_real_detections_as_views_train(data_dir, tmp_path):
    """A format-v2 dataset: each view is the projected ground truth or the detector's keypoints (no nose, shifted),
    simulated detector errors only on the others; the detections' visibility reaches the model and mining."""
    from prpose.dataset import load_dataset, write_dataset

    ds = load_dataset(data_dir)
    k2d = np.asarray(ds.keypoints2d)
    rng = np.random.default_rng(0)
    det = (k2d + rng.normal(0, 4, k2d.shape)).astype(np.float32)
    dvis = np.asarray(ds.visibility).copy()
    dvis[..., 9] = False  # h36m17 nose: absent, as in Stacked Hourglass
    det[..., 9, :] = 0.0
    write_dataset(tmp_path / "v2", poses3d=np.asarray(ds.poses3d), keypoints2d=k2d, visibility=np.asarray(ds.visibility),
                  rigs=ds.rigs, rig_index=np.asarray(ds.rig_index), source=ds.labels("source"),
                  subject=ds.labels("subject"), sequence=ds.labels("sequence"), split=ds.labels("split"),
                  frame=np.asarray(ds.frame), camera_names=ds.camera_names, detections2d=det, detections_visible=dvis,
                  detections={"detector": "test", "profile": "mpii16"})
    config = from_overrides("tiny", TINY + [
        "train.steps=10", "augment.detection_probability=0.5", "augment.detector_noise_probability=0.5",
        "augment.emit_visibility=true", "model.mask_mode=both", "loss.labels_visible_only=true"])
    messages = []
    last = train_and_evaluate(config, tmp_path / "v2", tmp_path / "det", progress=False, log=messages.append,
                              compiler_options=FAST)
    assert last["step"] == 10 and np.isfinite(last["loss"])
    assert any("usable real detected views" in m for m in messages)
    with pytest.raises(PrposeError, match="detection_probability > 0 needs augment.emit_visibility"):
        train_and_evaluate(from_overrides("tiny", ["augment.detection_probability=0.5"]), tmp_path / "v2",
                           tmp_path / "refused", progress=False, log=messages.append)



_FAULTS_OF_MALLOC = """
import ctypes, resource, sys
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
if sys.argv[1] == "reuse":
    from prpose.training import reuse_freed_memory
    assert reuse_freed_memory()
faults = []
for _ in range(3):  # malloc, write every page, free (as XLA's CPU runtime treats a step's temporary buffer)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = libc.malloc(64 << 20)
    ctypes.memset(buffer, 1, 64 << 20)
    libc.free(buffer)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


def test_reuse_freed_memory_keeps_large_buffers_mapped():
    """A freed 64 MB malloc buffer (above glibc's largest mmap threshold, like the paper step's 58.6 MB temporary
    buffer) page-faults in again at every allocation, unless reuse_freed_memory() applied (fresh processes)."""
    from prpose.training import reuse_freed_memory

    if not reuse_freed_memory():
        pytest.skip("not glibc: mallopt's parameters do not apply")

    def faults(mode):
        out = subprocess.run([sys.executable, "-c", _FAULTS_OF_MALLOC, mode], capture_output=True, text=True,
                             check=True).stdout
        return [int(f) for f in out.split()]

    assert min(faults("plain")) > 10_000  # 16,384 pages of 4 KB, every time
    assert max(faults("reuse")[1:]) < 100  # the first allocation grows the heap once
