"""Cross-view Hit@k: the protocol checked with oracle and permuted embeddings against a float64 reference."""

import argparse

import numpy as np
import pytest

from prpose.crossview import cross_view_hit_at_k, format_table
from prpose.dataset import load_dataset
from prpose.errors import PrposeError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from prpose.data_prep import synthetic

    out = tmp_path_factory.mktemp("cv") / "synthetic"
    assert synthetic.main(argparse.Namespace(out=str(out), sequences=10, frames=12, seed=3, rig="ring", cameras=3,
                                             overwrite=False)) == 0
    return load_dataset(out)


def _np_mpjpe_ref(pred, target):
    """Float64 Procrustes (rotation without reflection, uniform scale, translation), mean joint distance."""
    p, t = pred - pred.mean(0), target - target.mean(0)
    u, s, vt = np.linalg.svd(p.T @ t)
    d = np.sign(np.linalg.det(u @ vt))
    s[-1] *= d
    u[:, -1] *= d
    rot = u @ vt
    scale = s.sum() / (p ** 2).sum()
    aligned = scale * p @ rot + target.mean(0)
    return np.linalg.norm(aligned - target, axis=-1).mean()


def _norm3d(p):
    p = np.asarray(p, np.float64)
    return (p - p[0]) / (np.linalg.norm(p[0] - p[7]) + np.linalg.norm(p[7] - p[8]))


class _ByFrame:
    """An embed_fn whose output depends only on the frame's position in the call, through ``code``:
    frames with equal codes embed identically, whatever the camera. Records the calls."""

    def __init__(self, code, k=3):
        self.code, self.k, self.calls = np.asarray(code, np.float32), k, []

    def __call__(self, keypoints):
        self.calls.append(np.asarray(keypoints))
        n = keypoints.shape[0]
        mean = np.zeros((n, 4), np.float32)
        mean[:, 0] = self.code[:n]
        stddev = np.full((n, 4), 1e-3, np.float32)
        return mean, stddev, np.repeat(mean[:, None], self.k, axis=1)


def test_perfect_embedding_hits_every_query(dataset):
    n = dataset.indices(split="test").size
    fn = _ByFrame(np.arange(n) * 10.0)
    for ranking in ("l2", "match"):
        result = cross_view_hit_at_k(fn, dataset, "test", ks=(1, 5), ranking=ranking, match_params=(1.0, 0.0, 0.1))
        assert result["hit@1"] == result["hit@5"] == 1.0
        assert result["num_pairs"] == 6 and len(result["per_pair"]) == 6
        assert {(r["query_camera"], r["index_camera"]) for r in result["per_pair"]} == {
            (a, b) for a in dataset.camera_names for b in dataset.camera_names if a != b}
    # Every call embeds the frames seen from one camera: (N, 17, 2) pixels, the dataset's own values.
    rows = dataset.indices(split="test")
    np.testing.assert_array_equal(fn.calls[0], np.asarray(dataset.keypoints2d[rows, 0]))
    assert "mean" in format_table(result)


def test_retrieval_of_another_frame_matches_float64_reference(dataset):
    rows = dataset.indices(split="test")
    n = rows.size
    target = np.roll(np.arange(n), 1)  # camera 0 -> camera 1: query i's nearest index entry is frame i-1
    inverse = np.argsort(target)
    code = np.arange(n) * 10.0

    class QueryThenIndex:
        """Camera 0 (embedded first) gets ``code``; camera 1 gets it permuted so that index entry target[i]
        sits exactly on query i."""

        def __init__(self):
            self.count = 0

        def __call__(self, keypoints):
            mean = np.zeros((n, 2), np.float32)
            mean[:, 0] = code if self.count == 0 else code[inverse]
            self.count += 1
            return mean, np.ones_like(mean), mean[:, None].repeat(2, axis=1)

    poses = np.stack([_norm3d(p) for p in np.asarray(dataset.poses3d[rows])])
    # Hit when the retrieved pose, aligned onto the query's, is within kappa = 0.1.
    forward = np.mean([_np_mpjpe_ref(poses[target[i]], poses[i]) < 0.1 for i in range(n)])
    backward = np.mean([_np_mpjpe_ref(poses[inverse[j]], poses[j]) < 0.1 for j in range(n)])
    assert 0.0 < forward < 1.0  # the check can fail both ways

    result = cross_view_hit_at_k(QueryThenIndex(), dataset, "test", ks=(1,), ranking="l2", cameras=[0, 1])
    first, second = result["per_pair"]
    assert (first["query_camera"], first["index_camera"]) == tuple(dataset.camera_names[:2])
    assert first["hit@1"] == pytest.approx(forward, abs=1e-9)
    assert second["hit@1"] == pytest.approx(backward, abs=1e-9)
    assert result["hit@1"] == pytest.approx((forward + backward) / 2, abs=1e-9)


def test_subsampling_and_limits(dataset):
    n = dataset.indices(split="test").size
    fn = _ByFrame(np.arange(n) * 10.0)
    half = cross_view_hit_at_k(fn, dataset, "test", ks=(1,), ranking="l2", every=2)
    assert half["num_frames"] == (n + 1) // 2
    few = cross_view_hit_at_k(fn, dataset, "test", ks=(1,), ranking="l2", max_frames=7)
    assert few["num_frames"] == 7


def test_bad_arguments_are_clear_errors(dataset):
    fn = _ByFrame(np.arange(1000.0))
    with pytest.raises(PrposeError, match="ranking='cosine'"):
        cross_view_hit_at_k(fn, dataset, "test", ranking="cosine")
    with pytest.raises(PrposeError, match="needs match_params"):
        cross_view_hit_at_k(fn, dataset, "test", ranking="match")
    with pytest.raises(PrposeError, match="k=10000 exceeds"):
        cross_view_hit_at_k(fn, dataset, "test", ks=(1, 10000), ranking="l2")
    with pytest.raises(PrposeError, match="every=0"):
        cross_view_hit_at_k(fn, dataset, "test", ranking="l2", every=0)
    with pytest.raises(PrposeError, match="embed_fn must return"):
        cross_view_hit_at_k(lambda k: "nope", dataset, "test", ks=(1,), ranking="l2")


def test_two_stage_match_ranking_equals_exact_when_means_order_it(dataset):
    # Zero-spread samples: the match distance is monotone in the distance of the means, so re-ranking any
    # candidate set that contains the true top k gives exactly the exhaustive ranking.
    n = dataset.indices(split="test").size
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(3, n, 4)).astype(np.float32)
    calls = {"i": 0}

    def embed(keypoints):
        mean = codes[calls["i"] % 3]
        calls["i"] += 1
        return mean, np.ones_like(mean), np.repeat(mean[:, None], 2, axis=1)

    kw = dict(ks=(1, 3), ranking="match", match_params=(1.0, 0.0, 0.1))
    exact = cross_view_hit_at_k(embed, dataset, "test", **kw)
    assert exact["candidates"] is None
    for c in (3, 5, n - 1):
        two = cross_view_hit_at_k(embed, dataset, "test", candidates=c, **kw)
        assert two["candidates"] == c
        assert [p["hit@1"] for p in two["per_pair"]] == [p["hit@1"] for p in exact["per_pair"]]
        assert [p["hit@3"] for p in two["per_pair"]] == [p["hit@3"] for p in exact["per_pair"]]
    with pytest.raises(PrposeError, match="candidates=0"):
        cross_view_hit_at_k(embed, dataset, "test", candidates=0, **kw)
