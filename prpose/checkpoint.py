"""Checkpoints of training runs: atomic save, exact resume, config compatibility (fingerprints: prpose.fingerprint).

Layout of a run directory::

    <run>/config.json                the TrainConfig (written before the first step)
    <run>/checkpoints/<step>/state   params, optimizer state, non-param model state, step, RNG key
    <run>/checkpoints/<step>/ema     EMA params + the model's batch statistics (what inference loads)
    <run>/checkpoints/<step>/meta    JSON: step, fingerprint, prpose version

Why Orbax's ``CheckpointManager`` and not ``flax.serialization``: msgpack cannot serialise a full nnx state
(typed RNG keys; NOTES-ECOSYSTEM.md), while Orbax restores bit-exactly, handles sharded arrays (data
parallel runs), and saves atomically: it writes into ``<step>.orbax-checkpoint-tmp-*`` and renames to
``<step>`` only once every item is on disk. A run killed mid-save leaves only the temp directory, which
:func:`complete_steps` ignores, so it never loads as a good checkpoint. Typed PRNG keys are stored as their
raw ``key_data`` (uint32) and re-wrapped on restore, which keeps the tree plain arrays.

Saves are synchronous: on a 2-core CPU an async save competes with the step for the same cores, and a
synchronous save makes "the checkpoint of step N exists" mean what it says when the process dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import shutil
import sys
from typing import Any

import jax
import numpy as np

from prpose.errors import PrposeError

CHECKPOINT_DIR = "checkpoints"
_ITEMS = ("state", "ema", "meta")
# Orbax writes this file inside the temp directory before the final rename; a step directory without it
# was not produced by a finished save.
_ORBAX_MARKER = "_CHECKPOINT_METADATA"


# --- PRNG keys <-> raw arrays ----------------------------------------------------------------------------------

def _is_typed_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_storable(tree):
    """Replace typed PRNG keys by their uint32 ``key_data`` so that every leaf is a plain array."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_typed_key(x) else x, tree)


def from_storable(stored, template):
    """Inverse of :func:`to_storable`: re-wrap key data where ``template`` holds typed keys."""
    def restore(t, s):
        if _is_typed_key(t):
            return jax.random.wrap_key_data(s, impl=jax.random.key_impl(t))
        return s
    return jax.tree.map(restore, template, stored)


# --- compatibility ---------------------------------------------------------------------------------------------

def check_compatible(saved_model_dict: dict, current_model_dict: dict, where: str) -> None:
    """Raise PrposeError listing every model-relevant field that differs between a checkpoint and a config."""
    diffs = []

    def walk(a, b, prefix):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}{k}.")
        elif _normalise(a) != _normalise(b):
            diffs.append(f"{prefix[:-1]}: checkpoint has {a!r}, config has {b!r}")

    walk(saved_model_dict, current_model_dict, "")
    if diffs:
        raise PrposeError(f"{where}: checkpoint is incompatible with the requested config ("
                          + "; ".join(diffs) + "); use a fresh --out directory or the checkpoint's own config")


def _normalise(v):
    return list(v) if isinstance(v, tuple) else v


# --- the manager -----------------------------------------------------------------------------------------------

def checkpoint_dir(run_dir: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(run_dir).resolve() / CHECKPOINT_DIR


def complete_steps(run_dir: str | os.PathLike) -> list[int]:
    """Steps whose checkpoint finished saving (sorted). Leftover temp dirs and partial dirs are ignored."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    steps = []
    for child in root.iterdir():
        if not (child.is_dir() and child.name.isdigit()):
            continue  # e.g. "<step>.orbax-checkpoint-tmp-<n>" from a save that was interrupted
        if (child / _ORBAX_MARKER).is_file() and all((child / item).is_dir() for item in _ITEMS):
            steps.append(int(child.name))
        else:
            logging.warning("ignoring incomplete checkpoint directory %s", child)
    return sorted(steps)


def latest_step(run_dir: str | os.PathLike) -> int | None:
    steps = complete_steps(run_dir)
    return steps[-1] if steps else None


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a training run directory written by prpose (and holds nothing else).

    A run holds a ``config.json`` that parses as a TrainConfig and only the files training writes. Used
    before replacing a directory (``prpose demo --overwrite``): only prpose's own outputs are ever removed.
    """
    from prpose.config import CONFIG_FILENAME, load_config

    path = pathlib.Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    own = {CONFIG_FILENAME, CHECKPOINT_DIR, "metrics.jsonl", "metrics.jsonl.tmp"}
    if any(child.name not in own and not child.name.startswith(".config-") for child in path.iterdir()):
        return False
    try:
        load_config(path)
    except (PrposeError, OSError):
        return False
    root = path / CHECKPOINT_DIR
    return not root.exists() or (root.is_dir() and all(c.name.split(".")[0].isdigit() for c in root.iterdir()))


def _reason(error: BaseException) -> str:
    """One short line for an exception from Orbax/TensorStore (their messages run to kilobytes)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 240 else text[:237] + "..."


def restore_newest_intact(run_dir: str | os.PathLike, restore, *, log, move_damaged: bool = False):
    """Call ``restore(step)`` on the complete checkpoints newest first; return ``(step, its result)``.

    A checkpoint whose restore raises (unreadable or corrupted files, a weights fingerprint that does not
    match, ...) is reported through ``log`` with its path, step and reason, and the next older one is tried;
    using an older one is said too. With ``move_damaged`` (training resume) a damaged checkpoint is renamed to
    ``<step>.damaged`` (kept for inspection, ignored by :func:`complete_steps`) so that the resumed run can
    save that step again; this happens only once an older checkpoint restored, which proves the failure is
    the checkpoint's and not a mismatch of the caller's templates.

    Raises:
      PrposeError listing every checkpoint and why it failed, when none restores (nothing is renamed).
    """
    root = checkpoint_dir(run_dir)
    steps = complete_steps(run_dir)
    if not steps:
        raise PrposeError(f"{root}: no complete checkpoint found")
    failures: list[tuple[int, str]] = []
    for step in reversed(steps):
        try:
            result = restore(step)
        except KeyboardInterrupt:
            raise
        except Exception as error:  # noqa: BLE001 - Orbax/TensorStore raise many types; each is reported
            failures.append((step, _reason(error)))
            continue
        for bad, reason in failures:
            where = root / str(bad)
            note = ""
            if move_damaged:
                aside = where.with_name(f"{bad}.damaged")
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(where, aside)
                note = f"; moved aside to {aside}"
            log(f"warning: checkpoint {where} (step {bad}) is damaged: {reason}{note}")
        if failures:
            log(f"warning: using the newest intact checkpoint instead: {root / str(step)} (step {step})")
        return step, result
    raise PrposeError(f"{root}: no intact checkpoint: " + "; ".join(
        f"step {step} ({root / str(step)}): {reason}" for step, reason in failures))


class Checkpointer:
    """Saves and restores the training state of one run directory.

    ``state`` and ``ema`` are pytrees of arrays (typed PRNG keys allowed); ``meta`` a JSON-able dict.
    """

    def __init__(self, run_dir: str | os.PathLike, *, max_to_keep: int = 2):
        import orbax.checkpoint as ocp  # imported here: ~1 s, and only training/inference need it

        self._ocp = ocp
        self.run_dir = pathlib.Path(run_dir).resolve()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(checkpoint_dir(self.run_dir), options=options, item_names=_ITEMS)

    def save(self, step: int, state, ema, meta: dict[str, Any]) -> None:
        """Save synchronously; a failed write (a full disk) is reported with the checkpoint's path."""
        from prpose.errors import writing

        ocp = self._ocp
        with writing(checkpoint_dir(self.run_dir) / str(int(step))):
            self._manager.save(
                int(step),
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(to_storable(state)),
                    ema=ocp.args.StandardSave(to_storable(ema)),
                    meta=ocp.args.JsonSave(dict(meta, step=int(step))),
                ),
                force=True,
            )
            self._manager.wait_until_finished()

    def restore(self, step: int, state_template, ema_template):
        """Restore (state, ema, meta) of ``step`` with the structure, dtypes and shardings of the templates."""
        ocp = self._ocp
        _drop_closed_loop_reports()
        restored = self._manager.restore(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(to_storable(state_template))),
                ema=ocp.args.StandardRestore(_abstract(to_storable(ema_template))),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return (from_storable(restored["state"], state_template),
                from_storable(restored["ema"], ema_template), dict(restored["meta"]))

    def close(self) -> None:
        self._manager.close()


def restore_ema(run_dir: str | os.PathLike, ema_template, step: int | None = None):
    """Restore only the EMA item (inference): returns (step, ema tree, meta)."""
    import orbax.checkpoint as ocp

    step = latest_step(run_dir) if step is None else step
    if step is None:
        raise PrposeError(f"{checkpoint_dir(run_dir)}: no complete checkpoint found")
    # A read-only manager makes Orbax warn (via absl) that it will not save: true and useless to a user.
    with _quiet_absl():
        options = ocp.CheckpointManagerOptions(read_only=True, enable_async_checkpointing=False)
        manager = ocp.CheckpointManager(checkpoint_dir(run_dir), options=options, item_names=_ITEMS)
    _drop_closed_loop_reports()
    try:
        restored = manager.restore(step, args=ocp.args.Composite(
            ema=ocp.args.StandardRestore(_abstract(to_storable(ema_template))),
            meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - TensorStore/Orbax raise many types for damaged files
        raise PrposeError(f"{checkpoint_dir(run_dir)}/{step}: cannot restore the EMA weights ({_reason(e)})") from None
    finally:
        manager.close()
    return step, from_storable(restored["ema"], ema_template), dict(restored["meta"])


def load_ema_model(run_dir: str | os.PathLike, config, step: int | None = None, *, log, where: str):
    """The eval-mode model of a run's EMA weights, checked against their recorded fingerprint.

    ``config``: the run's TrainConfig (its objective builds the model); ``step`` None = the newest intact
    checkpoint (a damaged newer one is reported through ``log``). ``where`` prefixes the errors.
    Returns (eval graphdef, step, nnx state, fingerprint).
    """
    from flax import nnx

    from prpose.config import model_fingerprint_dict
    from prpose.fingerprint import fingerprint, named_leaves
    from prpose.model import init_split
    from prpose.objectives import get_objective

    graphdef, params, batch_stats, rest = init_split(config.model, config.window,
                                                     build=get_objective(config).build_model)
    template = {"params": params, "batch_stats": batch_stats}
    model_dict = model_fingerprint_dict(config)

    def restore(at: int):
        _, ema, meta = restore_ema(run_dir, template, at)
        fp = fingerprint(model_dict, named_leaves(ema["params"]))
        if meta.get("fingerprint") not in (None, fp):
            raise PrposeError(f"{where}: {run_dir}: checkpoint {at} weights do not match their recorded "
                              f"fingerprint ({meta.get('fingerprint')} vs recomputed {fp}); the files were changed "
                              "or corrupted")
        return ema, fp

    if step is None:  # the latest checkpoint, or the newest intact one if it is damaged (said through log)
        step, (ema, fp) = restore_newest_intact(run_dir, restore, log=log)
    else:
        ema, fp = restore(step)
    return graphdef, step, nnx.merge_state(ema["params"], ema["batch_stats"], rest), fp


def _drop_closed_loop_reports() -> None:
    """Drop the "Event loop is closed" reports TensorStore's reader threads emit after a read fails.

    When one array of a damaged checkpoint fails, Orbax closes its event loop while TensorStore callbacks
    for the other arrays are still queued; each then raises in a background thread, some time later, and
    Python prints it as an unraisable exception: dozens of tracebacks around the one error that matters.
    Installed once, process-wide; every other unraisable exception still goes to the previous hook.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_prpose_filter", False):
        return

    def hook(unraisable):
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and "Event loop is closed" in str(value)):
            previous(unraisable)

    hook._prpose_filter = True
    sys.unraisablehook = hook


@contextlib.contextmanager
def _quiet_absl():
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl_logger.setLevel(level)


def _abstract(tree):
    """ShapeDtypeStructs (with sharding for jax arrays) so that Orbax restores onto the same devices."""
    def leaf(x):
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        x = np.asarray(x)
        return np.zeros(x.shape, x.dtype)
    return jax.tree.map(leaf, tree)
