"""A model's fingerprint: ``"<config hash 12>-<weights hash 12>"``, the one definition.

Equal iff the same architecture (the fingerprinted part of the config, ``prpose.config.model_fingerprint_dict``)
and bit-identical EMA parameters. Training records it in every checkpoint, ``prpose export`` in ``model.json``,
indexes and stored embeddings refuse a model with another one. The hash reads (tree path, array) pairs with
hashlib only, so an exported model is checked without importing JAX; :func:`named_leaves` makes the pairs of
a live jax / nnx tree.
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterable

import numpy as np


def config_hash(config_dict: dict) -> str:
    """SHA-256 (hex) of the canonical JSON (sorted keys) of the fingerprinted config part."""
    return hashlib.sha256(json.dumps(config_dict, sort_keys=True).encode()).hexdigest()


def weights_hash(named_params: Iterable[tuple[str, np.ndarray]]) -> str:
    """SHA-256 (hex) over every (tree path, array) pair sorted by path: path, dtype, shape and bytes."""
    h = hashlib.sha256()
    for keystr, arr in sorted(named_params, key=lambda item: item[0]):
        arr = np.ascontiguousarray(np.asarray(arr))
        h.update(keystr.encode())
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def fingerprint(config_dict: dict, named_params: Iterable[tuple[str, np.ndarray]]) -> str:
    """``"<config hash 12>-<weights hash 12>"`` of the config part and the (tree path, array) pairs of the
    EMA parameters (``named_leaves(params)`` for a live tree; an exported model stores the pairs)."""
    return f"{config_hash(config_dict)[:12]}-{weights_hash(named_params)[:12]}"


def named_leaves(tree) -> list[tuple[str, np.ndarray]]:
    """(jax ``keystr`` path, host array) of every leaf of a params tree."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(jax.tree_util.keystr(path), np.asarray(leaf)) for path, leaf in leaves]

