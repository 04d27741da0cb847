"""Training Pr-VIPE: one loop you can read top to bottom (after big_vision and flax's examples).

``train_and_evaluate(config, data_dir, workdir)``:
  1. load the train split onto the devices once (prpose.pairs), replicated on every device;
  2. build the embedder, the optimizer (optax) and the EMA of the parameters;
  3. resume from the latest complete checkpoint of ``workdir`` if asked;
  4. loop: ``train_step`` (jitted), log metrics (progress + ``metrics.jsonl``), validate cross-view Hit@1 on the
     val split with the EMA weights (prpose.protocol), checkpoint; always checkpoint at the end.

``train_step`` is a pure function of (state, ema, arrays) run under ``jax.jit``: sample a batch -> camera
augmentation per view -> optional keypoint occlusion -> embed anchors and positives in one call (shared
weights, one batch-norm batch) -> mining on embedding means with the 3D labels' NP-MPJPE, K samples,
K x K match distances only for the chosen triplets (prpose.losses.pr_vipe_loss) -> grads -> optax update ->
EMA update. The model is handled with ``nnx.split`` / ``nnx.merge`` around the pure step (NOTES: same speed as
nnx.jit here; it makes the state an explicit pytree for sharding, donation and checkpoints).

Randomness: step t uses ``fold_in(key(seed), t)`` for the batch, augmentation and samples; dropout uses the
model's own RNG stream, whose counter is part of the saved state. So a resumed run repeats exactly what an
uninterrupted one would have done.

Data parallel: the batch is sharded over a 1-D mesh of all devices (axis "data"); parameters and optimizer state
are replicated; the dataset's frames are sharded over the processes (prpose.pairs: each holds its share, and the
sampled batch is the same as from one copy). Under jit the mean/variance of batch norm and the loss are computed
over the global batch, so 1 and N devices, or processes, give the same result up to float reduction order.
Multi-process (``jax.distributed``, ``prpose train --distributed``): every process computes (the steps, and the
validation on its own copy of the EMA weights); only process 0 writes config.json and metrics.jsonl and prints;
checkpoints are written by Orbax, which coordinates the processes (process 0 writes the replicated arrays and
the metadata).
"""

from __future__ import annotations

import functools
import json
import math
import os
import pathlib
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from prpose import checkpoint as ckpt
from prpose.config import TrainConfig, load_config, model_fingerprint_dict, save_config
from prpose.errors import PrposeError
from prpose.fingerprint import config_hash, fingerprint, named_leaves
from prpose.model import init_split
from prpose.objectives import Objective, Views, get_objective
from prpose.pairs import TrainArrays, load_train_arrays, sample_batch, sample_windows

METRICS_FILE = "metrics.jsonl"


class TrainState(NamedTuple):
    """Everything the step updates (a pytree). ``ema`` holds the EMA params + batch statistics."""

    step: jax.Array  # () int32
    params: Any  # nnx.State of nnx.Param
    batch_stats: Any  # nnx.State of nnx.BatchStat (empty unless norm="batch")
    rng_state: Any  # nnx.State of the model's RNG streams (dropout)
    opt_state: Any
    key: jax.Array  # typed PRNG key: key(seed)


# --- model and optimizer -------------------------------------------------------------------------------------

def make_schedule(config: TrainConfig) -> optax.Schedule:
    """Learning rate per step: constant, cosine, or linear warm-up then cosine (to final_lr_fraction x peak)."""
    lr, steps = config.learning_rate, config.steps
    if config.schedule == "constant":
        return optax.constant_schedule(lr)
    warmup = config.warmup_steps if config.schedule == "warmup_cosine" else 0
    warmup = min(warmup, max(steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else lr, peak_value=lr, warmup_steps=warmup,
        decay_steps=max(steps, warmup + 1), end_value=lr * config.final_lr_fraction)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    schedule = make_schedule(config)
    if config.optimizer == "adam":
        opt = optax.adam(schedule)
    elif config.optimizer == "adamw":
        opt = optax.adamw(schedule, weight_decay=config.weight_decay)
    elif config.optimizer == "adagrad":
        # The authors' optimiser (TF Adagrad, initial accumulator 0.1).
        opt = optax.adagrad(schedule, initial_accumulator_value=0.1)
    else:
        opt = optax.sgd(schedule, momentum=0.9)
    if config.grad_clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(config.grad_clip), opt)
    return opt


def create_train_state(config: TrainConfig, tx: optax.GradientTransformation, sharding=None):
    """(train graphdef, eval graphdef, TrainState, ema dict) for a fresh run of ``config``'s objective.

    Placed with ``sharding`` (replicated over the data-parallel mesh) or on the default device. Initialisation
    runs under jit (eager nnx init dispatches op by op: seconds on 2 cores).
    """
    build = get_objective(config).build_model
    abstract = nnx.eval_shape(lambda: build(config.model, config.window, config.seed))
    abstract.eval()
    eval_graphdef = nnx.graphdef(abstract)
    graphdef, params, batch_stats, rng_state = init_split(config.model, config.window, config.seed, train=True,
                                                          build=build, sharding=sharding)

    @functools.partial(jax.jit, out_shardings=sharding)
    def init(params, batch_stats, rng_state):
        state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                           rng_state=rng_state, opt_state=tx.init(params), key=jax.random.key(config.seed))
        ema = {"params": jax.tree.map(jnp.copy, params), "batch_stats": jax.tree.map(jnp.copy, batch_stats)}
        return state, ema

    state, ema = init(params, batch_stats, rng_state)
    return graphdef, eval_graphdef, state, ema


def reuse_freed_memory() -> bool:
    """Keep the memory the process frees for its next allocations instead of returning it to the OS (glibc).

    XLA's CPU runtime allocates the step's temporary buffer (every activation of the forward and backward pass:
    58.6 MB at the paper preset, 17.6 MB at ``cpu``) at each execution and frees it after. glibc serves an
    allocation above its mmap threshold (at most 32 MB) with a fresh mmap and unmaps it on free, so each paper
    step page-faulted its whole buffer in again: 14,300 faults and ~28 ms of kernel time per step, the gap between
    the full step and its stages timed alone (bench/bench_train_step.py --profile prints faults per step). With
    malloc's mmap off and heap trimming off the buffer is reused; results are unchanged. Process-wide: resident
    memory stays at its peak (what a training process holds anyway). Returns whether it applied (glibc only).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # mallopt's parameters below are glibc's
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2 ** 31 - 1))


def ema_decay_at(decay: float, step):
    """EMA decay with TF's ExponentialMovingAverage warm-up, min(decay, (1 + t) / (10 + t)): early averages
    are not dominated by the random initialisation (matters for short CPU schedules)."""
    t = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


# --- the step ------------------------------------------------------------------------------------------------

def train_step(state: TrainState, ema: dict, arrays: TrainArrays, *, graphdef, tx, config: TrainConfig,
               objective: Objective | None = None, data_sharding=None):
    """One optimisation step (pure; jit it with the keyword arguments bound). Returns (state, ema, metrics).

    ``objective`` (default: ``config.task``'s) supplies the loss; ``graphdef`` is its model's (train mode).
    """
    objective = objective or get_objective(config)
    *k_views, k_loss = jax.random.split(jax.random.fold_in(state.key, state.step), 6)
    with jax.named_scope("augment"):  # named scopes: the rows of bench/bench_train_step.py --profile
        views = augmented_views(k_views, arrays, config, data_sharding)

    # Loss and gradients (the objective: model call and loss).
    def loss_fn(params, batch_stats, rng_state):
        # The model mutates its batch statistics and RNG counter: rebuild their Variables inside this trace
        # (nnx refuses to mutate Variables created in an outer trace).
        batch_stats, rng_state = jax.tree.map(lambda x: x, (batch_stats, rng_state))
        model = nnx.merge(graphdef, params, batch_stats, rng_state)
        loss, metrics = objective.loss(model, views, k_loss, config)
        _, _, new_stats, new_rng = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
        return loss, (metrics, new_stats, new_rng)

    (_, (metrics, batch_stats, rng_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.batch_stats, state.rng_state)
    with jax.named_scope("optimizer"):
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

    # EMA of the weights (used for validation and inference); batch statistics are copied.
    with jax.named_scope("ema"):
        decay = ema_decay_at(config.ema_decay, state.step)
        ema = {"params": jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema["params"], params),
               "batch_stats": batch_stats}
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    new_state = state._replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                               rng_state=rng_state, opt_state=opt_state)
    return new_state, ema, metrics


def augmented_views(keys, arrays: TrainArrays, config: TrainConfig, data_sharding=None) -> Views:
    """Sample a batch and augment its two views (pure, jittable; ``keys``: five PRNG keys).

    Frames and an ordered pair of distinct cameras per frame (or windows of frames) -> camera augmentation per
    view (p = projection_probability) -> simulated detector errors (not on real detections) -> occlusion. A
    view drawn from real detections (pairs.sample_batch) may miss joints: its visibility goes to occlusion, the
    model and mining; a projection replaces it by a whole view.
    """
    from prpose.augment import detector_noise, occlude_keypoints, visibility_to_h36m17

    aug = config.augment
    profile = config.model.input_profile
    num_joints = config.model.num_keypoints
    k_batch, k_aug_a, k_aug_p, k_occ_a, k_occ_p = keys

    if config.window > 1:
        batch = sample_windows(k_batch, arrays, config.batch_size, config.window)
    else:
        batch = sample_batch(k_batch, arrays, config.batch_size, aug.detection_probability)
    if data_sharding is not None:
        batch = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, data_sharding), batch)

    def views(x2d, prior_visible, detected, k_aug, k_occ):
        lead = x2d.shape[:-2]  # (B,) or (B, T)
        flat2d, flat3d = x2d.reshape(-1, num_joints, 2), batch.poses3d.reshape(-1, 17, 3)
        if aug.projection_probability > 0:
            flat2d, projected = _camera_augment(flat2d, flat3d, k_aug, aug, lead, profile)
            if detected is not None:
                prior_visible = prior_visible | projected[:, None]
                detected = detected & ~projected
        if aug.detector_noise_probability > 0:
            flat2d = detector_noise(flat2d, jax.random.fold_in(k_aug, 1), aug, profile, exclude=detected)
        visible, visible3d = None, None
        if aug.dropout_p_apply > 0 or aug.structured_probability > 0 or aug.profile_dropout > 0:
            occ = occlude_keypoints(flat2d, k_occ, aug, profile, prior_visible)
            flat2d = occ.keypoints
            visible = occ.visible.reshape(*lead, num_joints) if aug.emit_visibility else None
            visible3d = occ.visible3d.reshape(*lead, 17)
        elif aug.detection_probability > 0 and prior_visible is not None:
            visible = prior_visible.reshape(*lead, num_joints)
            visible3d = visibility_to_h36m17(prior_visible, profile).reshape(*lead, 17)
        return flat2d.reshape(*lead, num_joints, 2), visible, visible3d

    anchor2d, anchor_vis, anchor_vis3d = views(batch.anchor2d, batch.anchor_visible, batch.anchor_detected,
                                               k_aug_a, k_occ_a)
    positive2d, positive_vis, _ = views(batch.positive2d, batch.positive_visible, batch.positive_detected,
                                        k_aug_p, k_occ_p)
    visible = None if anchor_vis is None else jnp.concatenate([anchor_vis, positive_vis])
    return Views(anchor2d, positive2d, visible, anchor_vis3d, batch.poses3d)


def _camera_augment(flat2d, flat3d, key, aug, lead, profile):
    """Per example (per window: one camera for all its frames), the real view or a random virtual camera's.

    Returns (keypoints (M, J, 2), projected (M,) bool: the views replaced by a projection).

    flat2d (M, J, 2) in the input ``profile``, flat3d (M, 17, 3) with M = prod(lead); lead = (B,) or (B, T).
    """
    from prpose.augment import camera_augment, depth_from_uniform, project_views, random_view_rotations

    if len(lead) == 1:
        return camera_augment(flat2d, flat3d, key, aug, profile, with_choice=True)
    batch, frames = lead
    k_choice, k_view, k_depth = jax.random.split(key, 3)
    rotations = jnp.repeat(random_view_rotations(k_view, batch, aug), frames, axis=0)
    depth = jnp.repeat(depth_from_uniform(jax.random.uniform(k_depth, (batch,)), aug), frames)
    projected, valid = project_views(flat3d, rotations, aug, profile, depth)
    use = jax.random.bernoulli(k_choice, aug.projection_probability, (batch,))
    use = jnp.repeat(use & valid.reshape(batch, frames).all(axis=1), frames)
    return jnp.where(use[:, None, None], projected, flat2d), use


# --- data parallel helpers -----------------------------------------------------------------------------------

def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh (axis "data") over ``devices`` (default: every visible device, all processes after
    jax.distributed.initialize())."""
    devices = jax.devices() if devices is None else list(devices)
    # Grouped by process: each process's frames are one block of the sharded dataset (prpose.pairs).
    return Mesh(np.array(sorted(devices, key=lambda d: (d.process_index, d.id))), ("data",))


# --- validation ----------------------------------------------------------------------------------------------

def validate(config: TrainConfig, ema: dict, dataset, split: str, fingerprint: str = "in-training") -> dict:
    """Cross-view Hit@k of the EMA weights on ``split`` (frames subsampled per the config; prpose.protocol); a
    temporal run's windows are judged on the window's 3D poses (prpose.window_protocol.validation)."""
    from prpose.inference import PoseEmbedder
    from prpose.protocol import embedder_hit_at_k

    ema = jax.device_get(ema)  # a host copy: every process validates on its own devices (no collective)
    embedder = PoseEmbedder.from_state(config, ema["params"], ema["batch_stats"], fingerprint=fingerprint)
    if config.window > 1:
        from prpose.window_protocol import validation

        return validation(embedder, dataset, split, every=config.eval_every_frame,
                          max_frames=config.eval_max_frames or None, kappa=config.loss.kappa,
                          candidates=config.eval_candidates or None)
    return embedder_hit_at_k(
        embedder, dataset, split, ks=(1, 5, 10), kappa=config.loss.kappa, ranking=config.eval_ranking,
        every=config.eval_every_frame, max_frames=config.eval_max_frames or None,
        candidates=config.eval_candidates or None)


def _eval_split(dataset, preferred: str) -> str | None:
    for split in dict.fromkeys((preferred, "val", "test")):
        try:
            if dataset.indices(split=split).size >= 2:
                return split
        except (PrposeError, ValueError):
            continue
    return None


# --- the loop ------------------------------------------------------------------------------------------------

def train_and_evaluate(config: TrainConfig, data_dir: str | os.PathLike, workdir: str | os.PathLike, *,
                       resume: bool = False, progress: bool = True, stop_at: int | None = None,
                       log=print, devices=None, compiler_options: dict | None = None) -> dict:
    """Train a model on ``data_dir`` into ``workdir``; returns the last metrics (and the last validation).

    Args:
      config: the run's TrainConfig (saved as workdir/config.json).
      data_dir: a prepared dataset (prpose.dataset).
      workdir: run directory: config.json, checkpoints/, metrics.jsonl.
      resume: continue from the latest complete checkpoint (refused if the model config differs).
        Without it, a workdir that already holds checkpoints is refused.
      progress: show progress (a bar on a terminal, periodic lines otherwise: prpose.progress).
      stop_at: stop (with a checkpoint) after this step, as if interrupted there; for tests and budgets.
      log: where one-line messages go.
      devices: devices of the data-parallel mesh (default all).
      compiler_options: XLA options for the step's jit (tests pass {"xla_backend_optimization_level": 0},
        which halves compile time).
    """
    from prpose.dataset import load_dataset

    primary = jax.process_index() == 0  # the one process that writes files and prints
    reuse_freed_memory()  # no page faults on the step's temporary buffer at every step
    if not primary:
        log, progress = (lambda *args, **kwargs: None), False
    workdir = pathlib.Path(workdir)
    if config.augment.detection_probability > 0 and not config.augment.emit_visibility:
        raise PrposeError("augment.detection_probability > 0 needs augment.emit_visibility=true (and a model.mask_mode "
                          "other than none): real detections miss joints (Stacked Hourglass has no nose), which the "
                          "model must see as missing")
    existing = ckpt.latest_step(workdir)
    if existing is not None and not resume:
        raise PrposeError(f"{workdir} already holds checkpoints (latest step {existing}); pass --resume to "
                          "continue, or choose another output directory")
    if resume and existing is None:
        # Launch scripts pass --resume on every (re)start: the first start has nothing to resume.
        log(f"--resume: {workdir} holds no complete checkpoint; starting a new run from step 0")
    if resume and (workdir / "config.json").is_file():
        # Checked before anything is written: a refused resume leaves the run resumable as it was.
        saved = load_config(workdir)
        ckpt.check_compatible(_resume_dict(saved), _resume_dict(config), str(workdir / "config.json"))

    mesh = make_mesh(devices)
    n_dev = mesh.devices.size
    if config.batch_size % n_dev:
        raise PrposeError(f"train.batch_size={config.batch_size} is not divisible by the {n_dev} devices")
    data_sharding = NamedSharding(mesh, P("data"))

    dataset = load_dataset(data_dir)
    arrays, report = load_train_arrays(dataset, "train", window=config.window, mesh=mesh,
                                       detections=config.augment.detection_probability > 0 and config.window == 1,
                                       profile=config.model.input_profile)
    log(f"train data: {report.summary()}")
    if config.augment.detection_probability > 0 and not report.detection_views:
        log("augment.detection_probability: the dataset holds no usable real detections"
            + (" (temporal runs use none)" if config.window > 1 else "") + "; every view is projected ground truth")
    objective = get_objective(config)
    validated = objective.embeds
    eval_split = _eval_split(dataset, config.eval_split) if validated else None
    if config.eval_every and eval_split is None:
        log("validation disabled: " + (f"train.task={config.task} is not a pose embedding" if not validated
                                       else "the dataset has no val or test frames"))

    tx = make_optimizer(config)
    graphdef, _, state, ema = create_train_state(config, tx, sharding=NamedSharding(mesh, P()))
    if config.init_from and not (resume and existing is not None):
        state, ema = _warm_start(config, state, NamedSharding(mesh, P()), log)
    model_dict = model_fingerprint_dict(config)
    if resume and existing is not None:
        # Restore before writing anything (config.json included); a damaged checkpoint is reported, moved
        # aside and the newest intact one is used.
        existing, (state, ema) = ckpt.restore_newest_intact(
            workdir, functools.partial(_restore_verified, workdir, state, ema, model_dict), log=log,
            move_damaged=primary)
        log(f"resumed from {ckpt.checkpoint_dir(workdir) / str(existing)}")
    saver = ckpt.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    start = int(state.step)
    if primary:
        save_config(config, workdir)
        if resume:
            _truncate_metrics(workdir / METRICS_FILE, start)
    end = config.steps if stop_at is None else min(config.steps, stop_at)
    if start >= end:
        log(f"nothing to do: the checkpoint is at step {start} and the run ends at step {end} "
            "(raise train.steps to continue)")
        saver.close()
        return {"step": start}

    step_fn = jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx, config=config, objective=objective,
                                        data_sharding=data_sharding if n_dev > 1 else None),
                      donate_argnums=(0, 1), compiler_options=compiler_options)

    def save(step):
        fp = fingerprint(model_dict, named_leaves(ema["params"]))
        saver.save(step, state, ema, {"fingerprint": fp, "config_hash": config_hash(model_dict)})
        return fp

    metrics_path = workdir / METRICS_FILE
    last: dict[str, Any] = {}
    bar = None
    if progress:
        from prpose.progress import progress as progress_bar

        bar = progress_bar(total=end, initial=start, desc="train", unit="step", dynamic_ncols=True, smoothing=0.1)
    t_last, step_last = time.perf_counter(), start
    pending: list = []
    with open(metrics_path if primary else os.devnull, "a") as metrics_file:  # only process 0 writes
        for step in range(start + 1, end + 1):
            state, ema, metrics = step_fn(state, ema, arrays)
            pending.append(metrics)  # stays on the device until the next log: no sync per step
            if config.log_every and (step % config.log_every == 0 or step == end):
                # Logged values are means over the steps since the previous log (smoother than one step).
                fetched = jax.device_get(pending)
                pending = []
                values = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
                now = time.perf_counter()
                values["steps_per_s"] = (step - step_last) / max(now - t_last, 1e-9)
                values["learning_rate"] = float(make_schedule(config)(step - 1))
                t_last, step_last = now, step
                if not all(math.isfinite(v) for v in values.values()):
                    raise PrposeError(f"step {step}: non-finite metrics {values}; lower train.learning_rate "
                                      "or set train.grad_clip")
                last = {"step": step, **values}
                _append_row(metrics_file, metrics_path, last)
                if bar is not None:
                    bar.set_postfix(**{label: format(values[name], fmt) for label, name, fmt in objective.progress},
                                    sps=f"{values['steps_per_s']:.1f}")
            if bar is not None:
                bar.update(1)
            if config.eval_every and eval_split and (step % config.eval_every == 0 or step == end):
                result = validate(config, ema, dataset, eval_split)
                row = {"step": step, "eval": {k: v for k, v in result.items() if k != "per_pair"}}
                _append_row(metrics_file, metrics_path, row)
                last["eval"] = row["eval"]
                log(f"step {step}: {eval_split} cross-view Hit@1 {100 * result['hit@1']:.1f}  "
                    f"Hit@10 {100 * result['hit@10']:.1f} ({result['num_frames']} frames)")
                t_last = time.perf_counter()  # validation time is not training speed
            if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == end:
                last["fingerprint"] = save(step)
    if bar is not None:
        bar.close()
    saver.close()
    return last


def _warm_start(config: TrainConfig, state: TrainState, sharding, log):
    """(state, ema) with the weights of the per-frame model ``config.init_from`` (prpose.windows.warm_start)."""
    from prpose.inference import load_model
    from prpose.windows import warm_start

    source = load_model(config.init_from, log=log)
    if source.config.window != 1:
        raise PrposeError(f"train.init_from={config.init_from!r}: a window={source.config.window} model; expected a "
                          "per-frame (window=1) model")
    params, batch_stats = warm_start(*source.weights(), state.params, state.batch_stats, config.window)
    log(f"init_from: weights of {config.init_from} (step {source.step}, {source.fingerprint})"
        + (f", the centre frame of the {config.window}-frame window" if config.window > 1 else ""))
    params, batch_stats = jax.device_put((params, batch_stats), sharding)
    ema = {"params": jax.tree.map(jnp.copy, params), "batch_stats": jax.tree.map(jnp.copy, batch_stats)}
    return state._replace(params=params, batch_stats=batch_stats), ema


def _append_row(file, path: pathlib.Path, row: dict) -> None:
    """One JSON line into the open metrics file (a full disk is reported with the file's path)."""
    from prpose.errors import writing

    with writing(path):
        file.write(json.dumps(row) + "\n")
        file.flush()


def _resume_dict(config: TrainConfig) -> dict:
    """What must match to resume: the model, and the optimizer state's structure."""
    return {**model_fingerprint_dict(config), "optimizer": config.optimizer, "grad_clip": config.grad_clip > 0}


def _restore_verified(workdir, state, ema, model_dict, step: int):
    """(state, ema) of checkpoint ``step``; PrposeError if its EMA weights do not match their fingerprint."""
    saver = ckpt.Checkpointer(workdir)
    try:
        state, ema, meta = saver.restore(step, state, ema)
    finally:
        saver.close()
    recorded, actual = meta.get("fingerprint"), fingerprint(model_dict, named_leaves(ema["params"]))
    if recorded not in (None, actual):
        raise PrposeError(f"weights do not match their recorded fingerprint ({recorded} vs recomputed {actual})")
    return state, ema


def _truncate_metrics(path: pathlib.Path, step: int) -> None:
    """Drop rows logged after ``step`` by an interrupted run: the resumed run logs those steps again."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = []
    for line in lines:
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
    if len(kept) != len(lines):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """The JSON lines of ``workdir/metrics.jsonl`` (training rows have "loss", validation rows "eval")."""
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def final_state(workdir: str | os.PathLike, config: TrainConfig):
    """Restore (TrainState, ema) of the latest checkpoint of ``workdir`` (tests and analysis)."""
    tx = make_optimizer(config)
    _, _, state, ema = create_train_state(config, tx)
    step = ckpt.latest_step(workdir)
    if step is None:
        raise PrposeError(f"{workdir}: no complete checkpoint")
    saver = ckpt.Checkpointer(workdir)
    try:
        state, ema, _ = saver.restore(step, state, ema)
    finally:
        saver.close()
    return state, ema


__all__ = ["TrainState", "train_step", "train_and_evaluate", "make_optimizer", "make_schedule",
           "create_train_state", "validate", "read_metrics", "final_state", "make_mesh", "reuse_freed_memory"]
