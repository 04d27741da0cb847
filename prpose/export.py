"""Weights-only models: export a training run's EMA weights, and find packaged models by name.

An exported model is a directory (format ``prpose-model`` version 1)::

    config.json    the run's TrainConfig (architecture, K, match smoothing; the schedule is kept as provenance)
    weights.npz    the EMA parameters and batch-norm statistics, float32, one array per leaf
    model.json     written last: format, name, fingerprint, training step, every array's name / tree path /
                   shape / dtype, the SHA-256 and size of weights.npz and config.json, free-form ``info``

No optimizer state and no checkpoint machinery (Orbax) is involved, so loading is fast and the directory is
small (the ``cpu`` preset's width-256 model is ~1.2 MB). The fingerprint is the training run's own
(``prpose.fingerprint``: config hash + hash of the EMA params), so an index built from the run is
accepted by the exported model and vice versa. ``model.json`` records each leaf's tree path string (jax
``keystr``) and the fingerprinted part of the config, so reading an exported model and checking its
fingerprint needs neither JAX nor Flax (``prpose.fingerprint`` hashes the stored (tree path, array) pairs); the full TrainConfig is parsed only on
demand (``ExportedModel.config``).

Packaged models live in ``prpose/models/<name>/`` (package data); :data:`DEFAULT_MODEL` is what
``prpose.inference.load_model()`` loads without an argument.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import types
from typing import Any

import numpy as np

from prpose.atomic import sha256_file
from prpose.errors import PrposeError
from prpose.fingerprint import fingerprint as fingerprint_of

FORMAT_NAME = "prpose-model"
FORMAT_VERSION = 1
MANIFEST = "model.json"
WEIGHTS = "weights.npz"
CONFIG = "config.json"

MODELS_ROOT = pathlib.Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = "prpose-cmu-v1"


# --- names and paths -------------------------------------------------------------------------------------------

def packaged_models() -> list[str]:
    """Names of the models shipped inside the package (directories of ``prpose/models`` with a model.json)."""
    if not MODELS_ROOT.is_dir():
        return []
    return sorted(p.name for p in MODELS_ROOT.iterdir() if (p / MANIFEST).is_file())


def is_exported(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an exported model directory (has a model.json)."""
    return (pathlib.Path(path) / MANIFEST).is_file()


def resolve(model: str | os.PathLike | None) -> pathlib.Path:
    """A model argument -> a directory: None -> the default packaged model; a packaged name -> its directory;
    anything else is taken as a path (an exported model or a training run directory)."""
    if model is None:
        model = DEFAULT_MODEL
    text = os.fspath(model)
    packaged = MODELS_ROOT / text
    if os.sep not in text and "/" not in text and (packaged / MANIFEST).is_file():
        return packaged
    path = pathlib.Path(text)
    if path.is_dir():
        return path
    names = packaged_models()
    raise PrposeError(f"model {text!r} is not a directory (an exported model or a training run) nor a packaged "
                      f"model ({', '.join(names) or 'none installed'})")


# --- the tree <-> flat arrays ----------------------------------------------------------------------------------

def _leaf_name(group: str, path) -> str:
    """A readable array name for a tree path, e.g. ``params/encoder/blocks/0/unit1/dense/kernel``
    (a Variable's trailing ``.value`` attribute is left out)."""
    parts = [group]
    for entry in path:
        for attr in ("key", "idx", "name"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    if len(parts) > 2 and parts[-1] == "value":
        parts.pop()
    return "/".join(parts)


def flatten_tree(group: str, tree) -> list[tuple[str, str, np.ndarray]]:
    """(name, keystr, array) for every leaf of a params / batch-stats tree, in tree order."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(_leaf_name(group, path), jax.tree_util.keystr(path), np.asarray(leaf)) for path, leaf in leaves]



# --- export ----------------------------------------------------------------------------------------------------

def export_model(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, step: int | None = None,
                 name: str | None = None, info: dict[str, Any] | None = None, overwrite: bool = False) -> pathlib.Path:
    """Write the EMA weights (+ batch statistics) and config of a training run as a weights-only model.

    Args:
      run_dir: a training run directory (``prpose train --out``).
      out_dir: the directory to write (atomically, ``prpose.atomic.replacing``: the whole directory is replaced).
      step: checkpoint step (default: the latest complete one).
      name: the model's name (default: ``out_dir``'s name).
      info: free-form JSON-able provenance stored in model.json (training data, command, time, ...).
      overwrite: replace an existing ``out_dir``.
    Returns:
      the written directory.
    """
    from prpose.config import load_config, model_fingerprint_dict, save_config
    from prpose.inference import load_model

    from prpose import atomic

    out = pathlib.Path(out_dir)
    atomic.check_target(out, overwrite, is_exported, "prpose model")  # before the model is loaded
    if is_exported(run_dir):
        raise PrposeError(f"{run_dir} is already an exported model; export reads a training run directory")
    model = load_model(run_dir, step=step)
    config = load_config(run_dir)
    params, batch_stats = model.weights()
    params_flat = flatten_tree("params", params)
    stats_flat = flatten_tree("batch_stats", batch_stats)
    fingerprint_config = model_fingerprint_dict(config)
    fingerprint = fingerprint_of(fingerprint_config, [(k, a) for _, k, a in params_flat])
    if fingerprint != model.fingerprint:  # the stored (path, array) pairs must verify on read
        raise PrposeError(f"export: fingerprint mismatch ({fingerprint} vs {model.fingerprint}); please report")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(out, is_ours=is_exported, kind="prpose model", overwrite=overwrite) as tmp:
        tmp.chmod(0o755)  # a model directory is ordinary readable data
        save_config(config, tmp)
        arrays = {n: a.astype(a.dtype.newbyteorder("<"), copy=False) for n, _, a in params_flat + stats_flat}
        np.savez(tmp / WEIGHTS, **arrays)
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "name": name or out.name,
            "fingerprint": fingerprint,
            "fingerprint_config": fingerprint_config,
            "model": config.to_dict()["model"],
            "step": model.step,
            "embedding_dim": model.embedding_dim,
            "num_samples": model.num_samples,
            "match_params": list(model.match_params),
            "arrays": [{"name": n, "keystr": k, "shape": list(a.shape), "dtype": a.dtype.str}
                       for n, k, a in params_flat + stats_flat],
            "files": {f: {"bytes": (tmp / f).stat().st_size, "sha256": sha256_file(tmp / f)} for f in (CONFIG, WEIGHTS)},
            "info": info or {},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return out


# --- reading ---------------------------------------------------------------------------------------------------

class ExportedModel:
    """The contents of an exported model directory, checked (sizes, SHA-256, array shapes, fingerprint).

    Attributes: path, manifest (dict), fingerprint, step, match_params (a, b, smoothing), window,
    model_spec (the ModelConfig fields as a namespace), params / batch_stats: lists of (keystr, array) in tree
    order, arrays: {name: array} (``params/...``, ``batch_stats/...``; what ``prpose.numpy_forward`` reads),
    config (the TrainConfig, parsed on first use: it imports the JAX-based config modules).
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = True):
        self.path = pathlib.Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise PrposeError(f"{self.path}: no {MANIFEST}; not an exported model (prpose export writes one)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as e:
            raise PrposeError(f"{manifest_path}: unreadable ({e})") from None
        if manifest.get("format") != FORMAT_NAME or manifest.get("version") != FORMAT_VERSION:
            raise PrposeError(f"{manifest_path}: format {manifest.get('format')!r} version {manifest.get('version')!r}; "
                              f"expected {FORMAT_NAME!r} version {FORMAT_VERSION}")
        for fname, expected in manifest["files"].items():
            f = self.path / fname
            if not f.is_file():
                raise PrposeError(f"{self.path}: missing {fname}")
            if f.stat().st_size != expected["bytes"] or (verify and sha256_file(f) != expected["sha256"]):
                raise PrposeError(f"{f}: size or SHA-256 differs from {MANIFEST}; the file was changed or corrupted")
        self.manifest = manifest
        with np.load(self.path / WEIGHTS, allow_pickle=False) as data:
            stored = {n: data[n] for n in data.files}
        self.arrays = {entry["name"]: stored.get(entry["name"]) for entry in manifest["arrays"]}
        self.params: list[tuple[str, np.ndarray]] = []
        self.batch_stats: list[tuple[str, np.ndarray]] = []
        for entry in manifest["arrays"]:
            arr = stored.get(entry["name"])
            if arr is None or list(arr.shape) != entry["shape"] or arr.dtype.str != entry["dtype"]:
                raise PrposeError(f"{self.path / WEIGHTS}: array {entry['name']!r} missing or not "
                                  f"{entry['shape']} {entry['dtype']}")
            group = self.params if entry["name"].startswith("params/") else self.batch_stats
            group.append((entry["keystr"], arr))
        fp = fingerprint_of(manifest["fingerprint_config"], self.params)
        if fp != manifest["fingerprint"]:
            raise PrposeError(f"{self.path}: weights do not match their fingerprint ({fp} vs recorded "
                              f"{manifest['fingerprint']}); the files were changed or corrupted")
        self.fingerprint = fp
        self.step = manifest.get("step")
        self.match_params = tuple(float(v) for v in manifest["match_params"])
        self.window = int(manifest["fingerprint_config"]["window"])
        self.model_spec = types.SimpleNamespace(**manifest["model"])

    @functools.cached_property
    def config(self):
        """The TrainConfig of config.json (checked against the fingerprinted part recorded in model.json)."""
        from prpose.config import load_config, model_fingerprint_dict

        config = load_config(self.path / CONFIG)
        if model_fingerprint_dict(config) != self.manifest["fingerprint_config"]:
            raise PrposeError(f"{self.path}: {CONFIG} does not describe the model recorded in {MANIFEST}")
        return config

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.path.name)

    def tree(self, group: str, template):
        """Rebuild a params / batch-stats tree shaped like ``template`` (matched by tree path)."""
        import jax

        arrays = dict(self.params if group == "params" else self.batch_stats)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
        out = []
        for path, leaf in leaves:
            key = jax.tree_util.keystr(path)
            if key not in arrays or arrays[key].shape != np.shape(leaf):
                raise PrposeError(f"{self.path}: {group} {key} missing or of the wrong shape for this architecture")
            out.append(arrays[key])
        if len(arrays) != len(leaves):
            raise PrposeError(f"{self.path}: {len(arrays)} {group} arrays stored, the architecture has {len(leaves)}")
        return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(a) for a in out])
