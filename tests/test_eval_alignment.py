"""DTW alignment: brute-force reference, known offsets, smoothing, and the experiments on a tiny dataset."""

import itertools

import numpy as np
import pytest

from prpose.eval import alignment
from prpose.errors import PrposeError
from prpose.views import views_from_dataset


def _dtw_reference(c):
    """Plain double-loop DTW cost (independent of the anti-diagonal implementation)."""
    t1, t2 = c.shape
    acc = np.full((t1, t2), np.inf)
    for i, j in itertools.product(range(t1), range(t2)):
        if i == 0 and j == 0:
            acc[i, j] = c[0, 0]
            continue
        prev = min(acc[i - 1, j] if i else np.inf, acc[i, j - 1] if j else np.inf,
                   acc[i - 1, j - 1] if i and j else np.inf)
        acc[i, j] = c[i, j] + prev
    return acc[-1, -1]


def _walk(t, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(size=(t, dim)), axis=0)


def _l2(a, b):
    return np.linalg.norm(a[:, None] - b[None], axis=-1)


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (6, 1), (7, 9), (12, 5)])
def test_dtw_cost_matches_brute_force(shape):
    c = np.random.default_rng(sum(shape)).random(shape)
    res = alignment.dtw(c)
    assert res.cost == pytest.approx(_dtw_reference(c))
    # The path is monotone, connected, spans both sequences, and its cells sum to the cost.
    p = res.path
    assert tuple(p[0]) == (0, 0) and tuple(p[-1]) == (shape[0] - 1, shape[1] - 1)
    steps = np.diff(p, axis=0)
    assert ((steps >= 0) & (steps <= 1)).all() and (steps.sum(1) >= 1).all()
    assert c[p[:, 0], p[:, 1]].sum() == pytest.approx(res.cost)


def test_identical_sequences_align_on_the_diagonal():
    x = _walk(30)
    res = alignment.dtw(_l2(x, x))
    assert res.cost == 0
    np.testing.assert_array_equal(res.path, np.stack([np.arange(30)] * 2, 1))


@pytest.mark.parametrize("offset", [0, 7, 25])
def test_subsequence_dtw_recovers_a_known_offset(offset):
    full = _walk(60, seed=offset)
    clip = full[offset:offset + 20] + np.random.default_rng(1).normal(scale=0.05, size=(20, 4))
    res = alignment.dtw(_l2(clip, full), subsequence=True)
    assert alignment.alignment_error(res.path, np.arange(offset, offset + 20.0)) == 0.0


def test_time_warped_sequence_maps_to_the_true_warp():
    # The second sequence plays the first at half speed: frame i of the first matches frame 2i of the second.
    t = np.linspace(0, 4 * np.pi, 40)
    a = np.stack([np.sin(t), np.cos(1.3 * t)], 1)
    t2 = np.linspace(0, 4 * np.pi, 79)
    b = np.stack([np.sin(t2), np.cos(1.3 * t2)], 1)
    res = alignment.dtw(_l2(a, b))
    assert alignment.alignment_error(res.path, 2.0 * np.arange(40)) < 0.8


def test_smooth_diagonal_hand_case():
    d = np.arange(9.0).reshape(3, 3)
    s = alignment.smooth_diagonal(d, 1)
    # (0,0): mean of d[0,0], d[1,1]; (1,1): mean of d[0,0], d[1,1], d[2,2]; (0,2): only d[0,2] (d[1,3] is out).
    assert s[0, 0] == pytest.approx((0 + 4) / 2)
    assert s[1, 1] == pytest.approx((0 + 4 + 8) / 3)
    assert s[0, 2] == pytest.approx(2.0)
    assert s[2, 0] == pytest.approx(6.0)
    np.testing.assert_array_equal(alignment.smooth_diagonal(d, 0), d)
    with pytest.raises(PrposeError, match="window"):
        alignment.smooth_diagonal(d, -1)


def test_smooth_diagonal_matches_loop_reference():
    d = np.random.default_rng(3).random((6, 9))
    s = alignment.smooth_diagonal(d, 2)
    for i, j in itertools.product(range(6), range(9)):
        vals = [d[i + o, j + o] for o in range(-2, 3) if 0 <= i + o < 6 and 0 <= j + o < 9]
        assert s[i, j] == pytest.approx(np.mean(vals))


def test_bad_cost_is_refused():
    with pytest.raises(PrposeError, match="cost"):
        alignment.dtw(np.zeros((0, 3)))
    with pytest.raises(PrposeError, match="non-finite"):
        alignment.dtw(np.array([[0.0, np.nan]]))


def test_content_label_parses_bandai_names():
    assert alignment.content_label("bandai1/data/dataset-1_walk-back_happy_002.bvh") == "walk-back"
    assert alignment.content_label("cmu/01_01.bvh") is None


def test_experiments_on_a_tiny_dataset(tmp_path):
    """Oracle features align a take with itself across cameras exactly; labels drive content retrieval."""
    from prpose import protocol
    from prpose.eval import baselines
    from prpose.eval.testing import tiny_dataset
    from prpose.dataset import load_dataset

    names = ["dataset-1_walk_a_001.bvh", "dataset-1_walk_b_001.bvh", "dataset-1_run_a_001.bvh",
             "dataset-1_run_b_001.bvh"]
    tiny_dataset(tmp_path / "ds", sequences=4, frames=24, cameras=2, splits=("test",), names=names)
    views = views_from_dataset(load_dataset(tmp_path / "ds"), "test")
    oracle = baselines.OracleMethod()
    feats = protocol.compute_features(oracle, views)
    off = alignment.offset_alignment(oracle, views, feats, 0, 1, clip=10, offset=6, window=1)
    assert off["takes"] == 4 and off["mean_error_frames"] == 0.0
    cross = alignment.cross_take_alignment(oracle, views, feats, 0, 1, window=0)
    assert cross["pairs"] == 2 and cross["mean_error_frames"] == 0.0  # the oracle *is* the reference
    ret = alignment.content_retrieval(oracle, views, feats, 0, 1, step=3)
    assert ret["queries"] == 4 and ret["chance"] == pytest.approx(1 / 3)
    assert 0.0 <= ret["accuracy"] <= 1.0
