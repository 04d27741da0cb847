"""Is the predicted sigma meaningful? Hit@1 of queries binned by their predicted uncertainty.

Pr-VIPE's stddev should be larger for ambiguous 2D views (a pose seen edge-on, self-occluding limbs), and those
queries should be retrieved less accurately. Each query's uncertainty is summarised by the geometric mean of its
stddev over embedding dimensions (a volume-like scale, insensitive to one dimension dominating); queries are
split into equal-count bins by it, and Hit@1 is reported per bin together with the Spearman rank correlation
between sigma and the top-1 NP-MPJPE.
"""

from __future__ import annotations

import numpy as np

from prpose.errors import PrposeError


def sigma_summary(stddev: np.ndarray) -> np.ndarray:
    """(M, D) stddev -> (M,) geometric mean over dimensions."""
    stddev = np.asarray(stddev, np.float64)
    if stddev.ndim != 2 or (stddev <= 0).any():
        raise PrposeError(f"stddev: expected positive (M, D) values, got shape {stddev.shape}")
    return np.exp(np.log(stddev).mean(axis=1))


def _rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    # Average ranks over ties so that constant inputs give no spurious correlation.
    vals, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (NaN when either input is constant)."""
    rx, ry = _rank(np.asarray(x, np.float64)), _rank(np.asarray(y, np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def sigma_calibration(result, features, num_bins: int = 5) -> dict:
    """Hit@1 per sigma bin for a cross-view result of an embedding method.

    result: prpose.protocol.CrossViewResult (its per-pair query rows and hits, ks must include 1).
    features: the per-camera Features used for the queries (each with "stddev" (N, D)).
    Returns {"bins": [{"sigma_low", "sigma_high", "queries", "hit@1", "mean_top1_np_mpjpe"}], "spearman_sigma_error",
    "spearman_sigma_hit"}.
    """
    if 1 not in result.ks:
        raise PrposeError(f"sigma_calibration needs Hit@1 in the result; its ks are {result.ks}")
    j = result.ks.index(1)
    names = list(result.camera_names)
    sig, hit, err = [], [], []
    for p in result.pairs:
        f = features[names.index(p.query_camera)]
        if "stddev" not in f:
            raise PrposeError(f"method {result.method!r} has no stddev: sigma calibration needs a probabilistic "
                              "embedding")
        sig.append(sigma_summary(f["stddev"][p.query_rows]))
        hit.append(p.hits[:, j])
        err.append(p.first_error)
    sig, hit, err = np.concatenate(sig), np.concatenate(hit), np.concatenate(err)
    edges = np.quantile(sig, np.linspace(0, 1, num_bins + 1))
    which = np.clip(np.searchsorted(edges, sig, side="right") - 1, 0, num_bins - 1)
    bins = []
    for b in range(num_bins):
        m = which == b
        if not m.any():
            continue
        bins.append({"sigma_low": float(edges[b]), "sigma_high": float(edges[b + 1]), "queries": int(m.sum()),
                     "hit@1": float(hit[m].mean()), "mean_top1_np_mpjpe": float(err[m].mean())})
    return {"method": result.method, "bins": bins, "spearman_sigma_error": spearman(sig, err),
            "spearman_sigma_hit": spearman(sig, hit.astype(float))}
