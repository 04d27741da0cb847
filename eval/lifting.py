"""The 3D-lifting baseline: a task of the one trainer, loaded here for retrieval by NP-MPJPE.

The paper's strongest non-embedding baseline: lift each 2D pose to a normalised 3D pose, then retrieve by
NP-MPJPE between lifted poses (eval.baselines.LiftingMethod). It is trained by ``prpose.training`` with
``train.task=lifting`` (prpose.objectives: the embedder's encoder with a 17 x 3 head, prpose.model.PoseLifter,
mean squared error on normalised 3D), so it gets the same data, augmentation, optimiser, schedule, budget,
EMA, checkpoints and run-directory layout as a Pr-VIPE run of the same config, and resumes like one::

    prpose train --config cpu --set train.task=lifting --data DIR --out RUNS/lifter
    prpose eval --data DIR --train-lifter RUNS/lifter        # the same, then the evaluation

Run directories of the former lifter format (``lifter_config.json`` + ``lifter_weights.npz``) are refused
with the command that retrains them.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import time

import numpy as np

from prpose.buckets import pad_rows
from prpose.errors import PrposeError

_OLD_FORMAT = ("lifter_config.json", "lifter_weights.npz")
_CHUNK = 4096


def train_lifter(config, data_dir, workdir, log=print, progress: bool = True) -> dict:
    """Train (or resume, or find finished) the lifting baseline with ``config``'s budget (its task set to lifting).

    Writes an ordinary run directory (prpose.training); returns {"steps", "seconds", "final_loss"}.
    """
    from prpose.checkpoint import latest_step
    from prpose.training import train_and_evaluate

    _refuse_old_format(pathlib.Path(workdir))
    config = dataclasses.replace(config, task="lifting")
    start = time.perf_counter()
    last = train_and_evaluate(config, data_dir, workdir, resume=latest_step(workdir) is not None, progress=progress,
                              log=log)
    return {"steps": int(last["step"]), "seconds": round(time.perf_counter() - start, 1),
            "final_loss": last.get("loss")}


def _refuse_old_format(run_dir: pathlib.Path) -> None:
    if any((run_dir / name).exists() for name in _OLD_FORMAT):
        raise PrposeError(f"{run_dir}: a lifter run of the former format ({' + '.join(_OLD_FORMAT)}), which this "
                          "version no longer reads; retrain it into a new directory with `prpose eval "
                          "--train-lifter NEW_RUN` or `prpose train --set train.task=lifting --out NEW_RUN`")


class Lifter:
    """A trained lifter (EMA weights of a ``train.task=lifting`` run):
    ``lift(keypoints (M, 13, 2), visible (M, 13)) -> (M, 17, 3)`` normalised 3D."""

    def __init__(self, run_dir, step: int | None = None, log=None):
        from flax import nnx

        from prpose import checkpoint as ckpt
        from prpose.config import CONFIG_FILENAME, load_config

        run_dir = pathlib.Path(run_dir)
        _refuse_old_format(run_dir)
        if not (run_dir / CONFIG_FILENAME).is_file():
            raise PrposeError(f"{run_dir}: not a lifter run (no {CONFIG_FILENAME}); train one with `prpose eval "
                              "--train-lifter RUN`")
        self.config = load_config(run_dir)
        if self.config.task != "lifting":
            raise PrposeError(f"{run_dir}: not a lifter run (its train.task is {self.config.task!r}); train one "
                              "with `prpose eval --train-lifter RUN`")
        if self.config.model.input_profile != "input13":
            raise PrposeError(f"{run_dir}: the lifter baseline reads input13 views; this run's model.input_profile "
                              f"is {self.config.model.input_profile!r}")
        log = log or (lambda message: print(message, file=sys.stderr))
        graphdef, self.step, state, self.fingerprint = ckpt.load_ema_model(run_dir, self.config, step, log=log,
                                                                            where="lifter")
        self._model = nnx.merge(graphdef, state)
        self._forward = nnx.jit(lambda m, x, v: m(x, v))
        self.name = f"3D lifting ({run_dir.name})"

    def lift(self, keypoints2d, visible) -> np.ndarray:
        from prpose.eval.baselines import normalized_2d_features

        x = normalized_2d_features(keypoints2d, visible).reshape(-1, 13, 2)
        v = np.asarray(visible, bool).reshape(-1, 13)
        out = []
        for s in range(0, len(x), _CHUNK):  # chunks padded to power-of-two buckets: few compiled shapes
            chunk, vis = x[s:s + _CHUNK], v[s:s + _CHUNK]
            out.append(np.asarray(self._forward(self._model, pad_rows(chunk), pad_rows(vis)))[:len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, 17, 3), np.float32)
