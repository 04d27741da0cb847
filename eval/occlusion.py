"""Occlusion robustness: cross-view Hit@k when the query's keypoints are partly missing.

Queries lose keypoints (the index stays clean, as a database of complete poses would): random dropout at several
rates, and structured patterns that hide a body part as a whole: the named parts of prpose.keypoints.BODY_PARTS,
the vocabulary that training's structured occlusion (prpose.augment) uses too (default: the left forearm, the
right lower leg, both lower legs: elbow-wrist, knee-ankle, knees and ankles). Missing
keypoints are passed to each method as invisible (score 0): the 2D baseline normalises with the visible keypoints
and zeroes the rest; an embedder applies its own missing-keypoint handling (prpose.inference).

The random masks are drawn from a seeded NumPy generator so that every method sees the same occluded queries.
A query whose remaining keypoints cannot be normalised (fewer than two visible torso joints) would be
meaningless: masks never hide more than two of the four torso joints, and any query that still fails is counted
(not silently dropped) in the result's settings.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from prpose import keypoints as kp
from prpose.errors import PrposeError

_J = kp.INPUT13.joints
DEFAULT_PATTERNS = ("left_forearm", "right_lower_leg", "lower_legs")
_TORSO = [_J.index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]


def pattern_mask(pattern: str, shape: tuple[int, ...]) -> np.ndarray:
    """Visibility (..., 13) with the named body part's joints hidden (a prpose.keypoints.BODY_PARTS name; no
    part hides more than two of the four torso joints); shape: the leading dims."""
    try:
        hidden = kp.body_part_mask(pattern, "input13")
    except PrposeError as e:
        raise PrposeError(f"occlusion pattern: {e}") from None
    return np.broadcast_to(~hidden, tuple(shape) + (13,)).copy()


def random_mask(rate: float, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Visibility (..., 13): each keypoint hidden independently with probability `rate`, except that at most two
    torso joints are hidden (the hidden extras are restored at random), so the query stays normalisable."""
    if not 0.0 <= rate < 1.0:
        raise PrposeError(f"dropout rate: got {rate}, expected a probability in [0, 1)")
    vis = rng.random(tuple(shape) + (13,)) >= rate
    torso = vis[..., _TORSO]
    # Restore hidden torso joints in a random order until two are visible.
    priority = np.where(torso, np.inf, rng.random(torso.shape))
    rank = priority.argsort(-1).argsort(-1)  # 0 = the first hidden joint to restore
    deficit = np.maximum(2 - torso.sum(-1), 0)[..., None]
    torso = torso | (rank < deficit)
    vis[..., _TORSO] = torso
    return vis


def occluded_queries(views, setting: str | float, seed: int = 0) -> np.ndarray:
    """Query visibility (N, C, 13) for a setting: a dropout rate (float) or a pattern name, AND the clean mask."""
    shape = views.visible.shape[:2]
    if isinstance(setting, str):
        vis = pattern_mask(setting, shape)
    else:
        vis = random_mask(float(setting), shape, np.random.default_rng(seed))
    return vis & views.visible


def occlusion_sweep(method, views, rates: Sequence[float] = (0.0, 0.1, 0.2, 0.3),
                    patterns: Sequence[str] = DEFAULT_PATTERNS, ks=(1, 10), kappa=0.1,
                    seed: int = 0, index_features=None) -> dict:
    """Hit@k of one method for each occlusion setting (same masks for every method given the same seed).

    Returns {"method", "ks", "settings": [{"setting", "mean": {"hit@k": ...}, "unnormalisable_queries"}]}.
    """
    from prpose.normalize import jit_normalize_2d
    from prpose.protocol import compute_features, cross_view_hit_at_k

    if index_features is None:
        index_features = compute_features(method, views)
    rows = []
    for setting in list(rates) + list(patterns):
        vis = occluded_queries(views, setting, seed)
        _, ok = jit_normalize_2d(views.keypoints2d, vis)
        res = cross_view_hit_at_k(method, views, ks, kappa, query_visible=vis, index_features=index_features)
        rows.append({"setting": setting if isinstance(setting, str) else f"random {float(setting):.0%}",
                     "rate": None if isinstance(setting, str) else float(setting),
                     "hidden_fraction": float(1.0 - vis.mean()),
                     "unnormalisable_queries": int((~np.asarray(ok)).sum()),
                     "mean": {f"hit@{k}": float(v) for k, v in zip(res.ks, res.mean)}})
    return {"method": method.name, "ks": list(ks), "kappa": kappa, "seed": seed, "settings": rows}
