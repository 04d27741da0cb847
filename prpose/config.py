"""Training configuration: frozen dataclasses, presets, dotted overrides and a JSON round trip.

A run is fully described by one :class:`TrainConfig`. It nests the model's, the loss's and the augmentation's
own dataclasses (defined beside the code they configure: ``prpose.model.ModelConfig``,
``prpose.losses.LossConfig``, ``prpose.augment.AugmentConfig``) and adds the schedule. The config is saved as
``config.json`` beside every checkpoint, so a run can be reproduced and a checkpoint refuses a model built
with a different architecture.

Presets (``get_preset(name)``):
  * ``paper``: the authors' schedule (REFERENCE.md): width 1024, 2 blocks, D 16, K 20, batch 256,
    Adagrad 0.02, 5M steps, EMA 0.9999. About a day on 15 machines; kept for reference and benchmarks.
  * ``cpu``: a schedule for a 2-core CPU (Adam with cosine decay, narrower MLP, far fewer steps).
  * ``tiny``: for tests; a few seconds.

Overrides are dotted ``section.field=value`` strings, ``section`` one of ``train``, ``model``, ``loss``,
``augment`` (``train`` may be omitted): ``from_overrides("cpu", ["train.batch_size=64", "model.width=256"])``.
Values are parsed by the type of the field's current value (bool, int, float, str, tuple, None).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile
from typing import Any, Iterable

from prpose.augment import AugmentConfig
from prpose.errors import PrposeError
from prpose.losses import LossConfig
from prpose.model import DEFAULT_INPUT_PROFILE, ModelConfig

CONFIG_FILENAME = "config.json"

OPTIMIZERS = ("adam", "adamw", "adagrad", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
SECTIONS = ("model", "loss", "augment")
TASKS = ("embedding", "lifting")  # prpose.objectives: what the trainer optimises
DEFAULT_TASK = "embedding"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    Attributes:
      model, loss, augment: the nested configs of the embedder, the loss/mining and the data augmentation.
      batch_size: global batch (all devices together); number of (anchor, positive) pairs per step.
      steps: total optimisation steps.
      optimizer: one of OPTIMIZERS; learning_rate its peak rate; schedule one of SCHEDULES
        ("warmup_cosine" warms up linearly over ``warmup_steps`` then decays with a cosine to
        ``final_lr_fraction`` x peak; "cosine" is the same without warm-up).
      weight_decay: only used by adamw.
      grad_clip: clip the global gradient norm to this value; 0 disables clipping.
      ema_decay: decay of the exponential moving average of the parameters used for inference and
        validation; 0 disables it (the EMA then equals the live parameters).
      seed: the run's only source of randomness (init, batches, augmentation, dropout, sampling).
      window: 1 for single-frame Pr-VIPE; > 1 (the paper: 7) trains the temporal embedder on windows of
        consecutive frames of one sequence.
      task: what is trained (prpose.objectives): "embedding" (Pr-VIPE, or L2-VIPE with loss.embedding="l2") or
        "lifting" (the 3D-lifting baseline: the same encoder regressing the normalised 3D pose; window 1).
      init_from: "" (random initialisation) or a per-frame model (run directory, exported model or packaged
        name) whose weights start the run; a temporal run starts as that model applied to the window's centre
        frame (prpose.windows.warm_start). Model settings must match. Ignored when resuming.
      log_every, eval_every, checkpoint_every: in steps; 0 disables (a final checkpoint is always written).
      eval_split: split used for validation ("val"; falls back to "test" when the dataset has no val frames).
      eval_every_frame: validation keeps every n-th frame of the split (bounds its cost).
      eval_max_frames: and at most this many frames (0 = no limit).
      eval_ranking: "match" (match distance, the paper's) or "l2" (L2 of means, cheaper).
      eval_candidates: with "match", re-rank only this many nearest entries by L2 of means (0 = exact over all).
        On the mocap test split (887 frames) 100 gave identical Hit@1/10/20 to exact, 4x faster.
      keep_checkpoints: how many recent checkpoints to keep on disk.
    """

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    batch_size: int = 256
    steps: int = 20_000
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "warmup_cosine"
    warmup_steps: int = 500
    final_lr_fraction: float = 0.01
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    ema_decay: float = 0.999
    seed: int = 0
    window: int = 1
    task: str = DEFAULT_TASK
    init_from: str = ""
    log_every: int = 100
    eval_every: int = 2000
    checkpoint_every: int = 2000
    eval_split: str = "val"
    eval_every_frame: int = 4
    eval_max_frames: int = 2000
    eval_ranking: str = "match"
    eval_candidates: int = 100
    keep_checkpoints: int = 2

    def __post_init__(self):
        checks = [
            (self.batch_size >= 2, "train.batch_size", self.batch_size, "an integer >= 2 (negatives are mined in the batch)"),
            (self.steps >= 1, "train.steps", self.steps, "an integer >= 1"),
            (self.optimizer in OPTIMIZERS, "train.optimizer", self.optimizer, f"one of {OPTIMIZERS}"),
            (self.learning_rate > 0, "train.learning_rate", self.learning_rate, "a positive number"),
            (self.schedule in SCHEDULES, "train.schedule", self.schedule, f"one of {SCHEDULES}"),
            (self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, "an integer >= 0"),
            (0 <= self.final_lr_fraction <= 1, "train.final_lr_fraction", self.final_lr_fraction, "a number in [0, 1]"),
            (self.grad_clip >= 0, "train.grad_clip", self.grad_clip, "a number >= 0 (0 disables clipping)"),
            (0 <= self.ema_decay < 1, "train.ema_decay", self.ema_decay, "a number in [0, 1)"),
            (self.window >= 1, "train.window", self.window, "an integer >= 1"),
            (self.task in TASKS, "train.task", self.task, f"one of {TASKS}"),
            (self.task != "lifting" or self.window == 1, "train.window", self.window,
             "1 with train.task=lifting (the lifter takes single frames)"),
            (min(self.log_every, self.eval_every, self.checkpoint_every) >= 0, "train.log_every/eval_every/checkpoint_every",
             (self.log_every, self.eval_every, self.checkpoint_every), "integers >= 0"),
            (self.eval_every_frame >= 1, "train.eval_every_frame", self.eval_every_frame, "an integer >= 1"),
            (self.eval_max_frames >= 0, "train.eval_max_frames", self.eval_max_frames, "an integer >= 0"),
            (self.eval_ranking in ("match", "l2"), "train.eval_ranking", self.eval_ranking, "'match' or 'l2'"),
            (self.eval_candidates >= 0, "train.eval_candidates", self.eval_candidates, "an integer >= 0 (0 = exact)"),
            (self.keep_checkpoints >= 1, "train.keep_checkpoints", self.keep_checkpoints, "an integer >= 1"),
        ]
        for ok, name, value, expected in checks:
            if not ok:
                raise PrposeError(f"config: {name}={value!r} is invalid; expected {expected}")

    # --- serialisation -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (tuples become lists in JSON)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "TrainConfig":
        """Inverse of :meth:`to_dict`. Unknown keys raise; missing keys keep their defaults."""
        if not isinstance(data, dict):
            raise PrposeError(f"{source}: expected a JSON object, got {type(data).__name__}")
        base = cls()
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key in SECTIONS:
                changes[key] = _dataclass_from_dict(getattr(base, key), value, f"{source}: {key}")
            elif key in _field_names(base):
                changes[key] = _coerce(getattr(base, key), value, f"{source}: train.{key}")
            else:
                raise PrposeError(f"{source}: unknown key {key!r}; known: {sorted(_field_names(base))}")
        return dataclasses.replace(base, **changes)

    @classmethod
    def from_json(cls, text: str, *, source: str = "config") -> "TrainConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise PrposeError(f"{source}: not valid JSON ({e})") from None
        return cls.from_dict(data, source=source)


def model_fingerprint_dict(config: TrainConfig) -> dict[str, Any]:
    """The parts of a config that change what an embedding means (architecture, K, match smoothing).

    Two runs with equal dicts produce interchangeable weights shapes; the fingerprint (checkpoint.py) adds a
    hash of the weights themselves. ``model.input_profile`` enters only when it is not the default input13, so
    runs and indexes made before the field existed keep their fingerprints; ``task`` likewise enters only when
    it is not "embedding".
    """
    model = dataclasses.asdict(config.model)
    if model.get("input_profile") == DEFAULT_INPUT_PROFILE:
        del model["input_profile"]
    out = {"model": model, "window": config.window}
    if config.task != DEFAULT_TASK:
        out["task"] = config.task
    if hasattr(config.loss, "smoothing"):
        out["smoothing"] = config.loss.smoothing
    return out


# --- presets -------------------------------------------------------------------------------------------------

def _paper() -> TrainConfig:
    return TrainConfig(
        model=_replace(ModelConfig(), "model", width=1024, num_blocks=2, embedding_dim=16, num_samples=20),
        batch_size=256,
        steps=5_000_000,
        optimizer="adagrad",
        learning_rate=0.02,
        schedule="constant",
        warmup_steps=0,
        ema_decay=0.9999,
        eval_every=10_000,
        checkpoint_every=10_000,
        log_every=100,
    )


def _cpu() -> TrainConfig:
    # Optimiser and schedule chosen from measurement on the shared 2-core machine (mocap val split, 837 frames,
    # 1,500-step probes at width 256 / batch 128): Adam 3e-3 with warm-up + cosine reached val Hit@1 78.1,
    # Adam 1e-3 71.8, the authors' Adagrad 0.02 39.3. Normalisation layer: batch norm (the authors'). Full
    # preset on the mocap, one seed each: batch norm val Hit@1 93.6, layer norm 92.7. At per-device batch 16
    # (synthetic, 600 steps) batch norm falls behind: val Hit@1 batch 28.0, group 33.7, layer 34.1; at 256:
    # 61.9 / 64.6 / 75.8. So: batch norm here; set model.norm=layer for small per-device batches or short runs.
    #
    # The robust recipe (issue 8; bench/ablate_recipe.py, every variant 20k steps, robustness table of
    # bench/bench_robustness.py on the mocap test split, every 10th frame, Hit@1 %: clean / detector noise /
    # 2 missing limb joints / 4-camera ring at 45 deg):
    #   width 256, no robustness ingredients (the previous preset): 94.1 / 27.6 / 4.9 / 19.2;
    #   + realistic camera distance, depth U(5, 14) torso units instead of 2.0: 96.8 / 19.9 / 4.5 / 21.8;
    #   + elevation +-60 (with the realistic depth, widening no longer costs the real rig): 95.5 / 23.4 / 4.7 / 53.1;
    #   + fitted detector noise (p 0.5): 90.2 / 48.8 / 7.1 / 52.3;
    #   + keypoint dropout and structured occlusion with the mask input (strong: 0.3 x 0.2, structured 0.2):
    #     83.8 / 44.3 / 47.9 / 26.4 (width 256 is too small for everything at once);
    #   the same at width 512: 88.3 / 47.8 / 55.9 / 35.9; at width 768: 89.1 / 49.7 / 59.2 / 39.6;
    #   width 512 with milder rates (noise p 0.3, dropout 0.2 x 0.2, structured 0.1): 91.9 / 47.7 / 59.8 / 46.2
    #   <- this preset. Time on the shared 2-core machine (bench: 700-step runs of train.py one after the other,
    #   load 14-17): the previous preset 21 steps/s, this one 7.7 steps/s (width 512 and the per-view noise and
    #   occlusion), i.e. 2.7x under load; on the idle machine (load ~1.5, steps 500-1,500) it ran 30-32 steps/s,
    #   i.e. about 11 min for 20k steps plus validation (the previous preset: 67 steps/s, 5.7 min).
    # Real detections as training views (augment.detection_probability; only datasets with detections, e.g.
    # `prpose prep h36m` on 3d-pose-baseline's tree; no effect on the mocap): this recipe at width 256, 3k steps on
    # Human3.6M S1/S5/S6/S7/S8, S9/S11 every 20th authors' frame (521), Hit@1 GT 2D / Stacked Hourglass 2D: without
    # 79.5 / 30.1, with p 0.5 72.6 / 33.5 (2D keypoints 16.9 / 12.3). Kept on: the detected row is what users
    # feed; it costs ground-truth accuracy at this budget. Profile dropout 0.3 (hide the nose or head top): 77.8 /
    # 31.7, within run-to-run noise of the input13 model; left off here (meant for input14 multi-detector models).
    # At full length (README, "what limits the detected row": the 20k-step run of this recipe without detection
    # views, continued 4k steps; S9/S11 every 4th authors' frame, Hit@1 GT / detected): no continuation 83.3 / 39.5;
    # continued without detections (the control) 80.2 / 36.6; with p 0.5 (a quarter of the views are detections,
    # the projection replaces the rest) 79.3 / 38.5;
    # tuned for Human3.6M's fixed rig (projection 0.2, elevation +-30, no structured occlusion) without detections
    # 86.0 / 40.5, with p 0.7 84.1 / 44.0; detections only 79.4 / 47.3. Against the control, p 0.5 here gives the
    # detected row +1.9 for -0.9 on ground truth; detections pay most as most of the views.
    return TrainConfig(
        model=_replace(ModelConfig(), "model", width=512, num_blocks=2, embedding_dim=16, num_samples=20,
                       mask_mode="both"),
        loss=_replace(LossConfig(), "loss", labels_visible_only=True),
        augment=_replace(AugmentConfig(), "augment", depth=5.0, depth_max=14.0, elevation_range=(-60.0, 60.0),
                         detector_noise_probability=0.3, dropout_p_apply=0.2, dropout_p_drop=0.2,
                         structured_probability=0.1, emit_visibility=True, detection_probability=0.5),
        batch_size=128,
        steps=20_000,
        optimizer="adam",
        learning_rate=3e-3,
        schedule="warmup_cosine",
        warmup_steps=200,
        ema_decay=0.999,
        grad_clip=0.0,
        eval_every=5000,
        checkpoint_every=2500,
        log_every=100,
        eval_max_frames=1000,
        eval_every_frame=1,
    )


def _h36m() -> TrainConfig:
    # The `cpu` recipe tuned for a fixed multi-camera rig with real detections (Human3.6M S1/S5/S6/S7/S8 prepared
    # by `prpose prep h36m`, which stores the Stacked Hourglass detections beside the projected ground truth).
    # From-scratch 20k-step runs of the `cpu` preset with the rig tuning below (fewer and flatter virtual cameras:
    # projection 0.2, elevation +-30; no structured occlusion), S9/S11 every 4th of the authors' frames (2,602 x 4
    # cameras, 12 pairs), Hit@1 % ground-truth 2D / Stacked Hourglass 2D, by the share of real detections as
    # training views (detection_probability x (1 - projection_probability)) and width (README, "what limits the
    # detected row"):
    #   width 512, detection_probability 0   (no detection views):  87.6 / 40.6   (30 min)
    #   width 512, detection_probability 0.7 (56 % of the views):   82.6 / 49.2   (21 min)
    #   width 512, detection_probability 1.0 (80 % of the views):   78.4 / 50.4   (23 min)
    #   width 1024, detection_probability 0:                         89.3 / 43.7   (21 min)
    #   width 1024, detection_probability 0.7:                       85.1 / 53.8   (31 min)  <- this preset
    # Detections trade ground-truth accuracy for detected accuracy (0.7 keeps most of the detected gain); width
    # 1024 lifts both rows (+2.5 / +4.6 with detections, +1.7 / +3.1 without). Wall times on the shared 2-core machine at load 3-8: longer than the
    # `cpu` preset's budget. On a dataset without detections this is the rig-tuned `cpu` recipe at width 1024.
    config = _cpu()
    return dataclasses.replace(
        config, model=dataclasses.replace(config.model, width=1024),
        augment=dataclasses.replace(config.augment, projection_probability=0.2, elevation_range=(-30.0, 30.0),
                                    structured_probability=0.0, detection_probability=0.7))


def _tiny() -> TrainConfig:
    # Seconds on 2 cores (compilation dominates; the steps take milliseconds); the loss visibly drops.
    return TrainConfig(
        model=_replace(ModelConfig(), "model", width=32, num_blocks=1, embedding_dim=8, num_samples=8),
        batch_size=16,
        steps=100,
        optimizer="adam",
        learning_rate=1e-2,
        schedule="constant",
        warmup_steps=0,
        ema_decay=0.9,
        log_every=10,
        eval_every=50,
        checkpoint_every=50,
        eval_every_frame=1,
        eval_max_frames=64,
    )


PRESETS = {"paper": _paper, "cpu": _cpu, "h36m": _h36m, "tiny": _tiny}


def get_preset(name: str) -> TrainConfig:
    """A fresh preset config by name ("paper", "cpu", "h36m", "tiny")."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise PrposeError(f"unknown config preset {name!r}; expected one of {sorted(PRESETS)}") from None


def from_overrides(preset: str | TrainConfig, overrides: Iterable[str] = ()) -> TrainConfig:
    """Apply dotted ``key=value`` overrides to a preset (by name) or a config.

    ``train.`` may be omitted for the top-level fields. Unknown keys and values of the wrong type raise
    PrposeError naming the override.
    """
    config = get_preset(preset) if isinstance(preset, str) else preset
    for item in overrides:
        if "=" not in item:
            raise PrposeError(f"override {item!r}: expected key=value, e.g. train.batch_size=64")
        key, raw = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if parts[0] == "train":
            parts = parts[1:]
        if len(parts) == 1:
            name = parts[0]
            if name in SECTIONS or name not in _field_names(config):
                raise PrposeError(f"override {item!r}: unknown key {key!r}; train fields: "
                                  f"{sorted(set(_field_names(config)) - set(SECTIONS))}")
            value = _parse(getattr(config, name), raw, f"override {item!r}")
            config = _rebuild(config, {name: value}, item)
        elif len(parts) == 2 and parts[0] in SECTIONS:
            section, name = parts
            sub = getattr(config, section)
            if name not in _field_names(sub):
                raise PrposeError(f"override {item!r}: {type(sub).__name__} has no field {name!r}; "
                                  f"known: {sorted(_field_names(sub))}")
            value = _parse(getattr(sub, name), raw, f"override {item!r}")
            config = _rebuild(config, {section: _rebuild(sub, {name: value}, item)}, item)
        else:
            raise PrposeError(f"override {item!r}: unknown key {key!r}; expected train.<field> or "
                              f"<section>.<field> with section in {SECTIONS}")
    return config


# --- files ---------------------------------------------------------------------------------------------------

def save_config(config: TrainConfig, directory: str | os.PathLike) -> pathlib.Path:
    """Write ``config.json`` into ``directory`` atomically (temp file + rename)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_FILENAME
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".json.tmp", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write(config.to_json() + "\n")
    os.replace(tmp, path)
    return path


def load_config(directory_or_file: str | os.PathLike) -> TrainConfig:
    """Read a ``config.json`` (or the one inside a run directory)."""
    path = pathlib.Path(directory_or_file)
    if path.is_dir():
        path = path / CONFIG_FILENAME
    if not path.is_file():
        raise PrposeError(f"{path}: no such config file (a run directory holds {CONFIG_FILENAME})")
    return TrainConfig.from_json(path.read_text(), source=str(path))


# --- helpers -------------------------------------------------------------------------------------------------

def _field_names(obj) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)]


def _replace(obj, section: str, **changes):
    unknown = [k for k in changes if k not in _field_names(obj)]
    if unknown:  # a teammate renamed a field: fail loudly at import, not deep in training
        raise PrposeError(f"config preset: {type(obj).__name__} has no field(s) {unknown} ({section})")
    return dataclasses.replace(obj, **changes)


def _rebuild(obj, changes: dict, what: str):
    try:
        return dataclasses.replace(obj, **changes)
    except PrposeError:
        raise
    except (TypeError, ValueError) as e:
        raise PrposeError(f"override {what!r}: {e}") from None


def _dataclass_from_dict(template, data, where: str):
    if not isinstance(data, dict):
        raise PrposeError(f"{where}: expected an object, got {type(data).__name__}")
    changes = {}
    for key, value in data.items():
        if key not in _field_names(template):
            raise PrposeError(f"{where}: unknown key {key!r}; known: {sorted(_field_names(template))}")
        changes[key] = _coerce(getattr(template, key), value, f"{where}.{key}")
    try:
        return dataclasses.replace(template, **changes)
    except (TypeError, ValueError) as e:
        raise PrposeError(f"{where}: {e}") from None


def _coerce(current, value, where: str):
    """Convert a JSON value to the type of ``current`` (lists to tuples, ints to floats), else raise."""
    if dataclasses.is_dataclass(current) and not isinstance(current, type):
        return _dataclass_from_dict(current, value, where)
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(current, str):
        if isinstance(value, str):
            return value
    elif isinstance(current, tuple):
        if isinstance(value, (list, tuple)):
            if current:
                return tuple(_coerce(current[0], v, where) for v in value)
            return tuple(value)
    else:
        return value
    raise PrposeError(f"{where}: value {value!r} has the wrong type; expected {type(current).__name__} "
                      f"like the default {current!r}")


def _parse(current, raw: str, where: str):
    """Parse a command-line string by the type of the field's current value."""
    raw = raw.strip()
    try:
        if isinstance(current, bool):
            low = raw.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if isinstance(current, int):
            return int(raw.replace("_", ""))
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, str):
            return raw
        if isinstance(current, tuple):
            items = json.loads(raw) if raw.startswith("[") else [s for s in raw.split(",") if s.strip()]
            if current and not isinstance(current[0], str) and not raw.startswith("["):
                return tuple(_parse(current[0], s, where) for s in items)
            return _coerce(current, list(items), where)
        if current is None:
            return None if raw.lower() in ("none", "null") else json.loads(raw)
    except (ValueError, json.JSONDecodeError):
        pass
    raise PrposeError(f"{where}: cannot parse {raw!r} as {type(current).__name__} (current value {current!r})")
