"""The cross-view Hit@k protocol (prpose.protocol, prpose.views): known answers on synthetic data (oracle, random,
duplicated cameras, frame-coded embeddings), a float64 reference of the whole protocol, and training validation's
entry point (embedder_hit_at_k)."""

import math

import numpy as np
import pytest
from conftest import np_mpjpe_ref, reference_hit_rates

from prpose import keypoints as kp, protocol
from prpose.eval import baselines
from prpose.camera import elevation_ring_cameras
from prpose.errors import PrposeError
from prpose.views import ViewSet, views_from_cameras, views_from_dataset


@pytest.fixture(scope="module")
def views():
    from prpose.camera import ring_rig
    from prpose.synthetic import generate_motions

    poses = np.concatenate(generate_motions(3, 20, seed=1))
    return views_from_cameras(poses, ring_rig(3, 4.0, 1.5))


def test_top_k_matches_stable_argsort_and_breaks_ties_by_index():
    rng = np.random.default_rng(0)
    d = rng.integers(0, 5, size=(7, 30)).astype(float)  # many ties
    for k in (1, 3, 10, 30, 50):
        expected = np.argsort(d, axis=1, kind="stable")[:, :min(k, 30)]
        np.testing.assert_array_equal(protocol.top_k(d, k), expected)
    d = rng.random((5, 40))
    np.testing.assert_array_equal(protocol.top_k(d, 4), np.argsort(d, axis=1)[:, :4])


def test_hits_from_errors_hand_case():
    err = np.array([[0.05, 0.5, 0.5], [0.5, 0.5, 0.09], [0.5, 0.5, 0.5]])
    hits = protocol.hits_from_errors(err, ks=(1, 2, 3, 20), kappa=0.1)
    np.testing.assert_array_equal(hits, [[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]])


def test_expected_random_rate_closed_form():
    # N = 4 entries, one match: P(hit@1) = 1/4, P(hit@2) = 1 - (3/4)(2/3) = 1/2; two matches, k=2: 1 - (2/4)(1/3).
    np.testing.assert_allclose(protocol.expected_random_hit_rate([1], 4, (1, 2, 4)), [0.25, 0.5, 1.0])
    np.testing.assert_allclose(protocol.expected_random_hit_rate([2], 4, (2,)), [1 - 1 / 6])
    np.testing.assert_allclose(protocol.expected_random_hit_rate([0, 4], 4, (1,)), [0.5])


def test_retrieved_np_mpjpe_matches_float64_reference(views):
    rng = np.random.default_rng(2)
    q = views.poses3d[:5]
    r = views.poses3d[rng.integers(0, views.num_frames, size=(5, 3))]
    got = protocol.retrieved_np_mpjpe(q, r)
    ref = np.array([[np_mpjpe_ref(r[i, j], q[i]) for j in range(3)] for i in range(5)])
    np.testing.assert_allclose(got, ref, atol=2e-5)


def test_oracle_embedding_gives_hit_at_1_of_one(views):
    res = protocol.cross_view_hit_at_k(baselines.OracleMethod(), views, ks=(1, 5))
    assert len(res.pairs) == 6  # 3 cameras: every ordered pair of distinct cameras
    np.testing.assert_array_equal(res.mean, [1.0, 1.0])
    assert all((p.first_error < 1e-4).all() for p in res.pairs)


def test_random_ranking_matches_expected_rate(views):
    ks = (1, 5, 20)
    expected = protocol.expected_random_result(views, ks)
    rates = np.mean([protocol.cross_view_hit_at_k(baselines.RandomMethod(seed), views, ks).mean
                     for seed in range(5)], axis=0)
    n_queries = 5 * 6 * views.num_frames
    for k, got in zip(ks, rates):
        p = expected["mean"][f"hit@{k}"]
        assert 0 < p < 1
        # Binomial tolerance (queries are not independent across pairs of one frame: be generous, 5 sigma).
        assert abs(got - p) < 5 * math.sqrt(p * (1 - p) / n_queries) + 0.02, (k, got, p)


def test_per_pair_table_and_mean_agree(views):
    res = protocol.cross_view_hit_at_k(baselines.Keypoints2DMethod(), views, ks=(1, 10))
    d = res.to_dict()
    for j, k in enumerate(res.ks):
        m = res.pair_matrix(k)
        assert np.isnan(np.diag(m)).all()
        assert np.nanmean(m) == pytest.approx(res.mean[j])
        assert np.mean([p[f"hit@{k}"] for p in d["pairs"]]) == pytest.approx(d["mean"][f"hit@{k}"])
        for p, pr in zip(d["pairs"], res.pairs):
            assert p[f"hit@{k}"] == pytest.approx(pr.hits[:, j].mean())
    text = protocol.format_pair_table(res, 1) + protocol.format_table([d], res.ks)
    assert "ring0" in text and "2D keypoints" in text


def test_2d_baseline_is_perfect_when_two_cameras_see_the_same_image(views):
    # Two cameras with identical projections: 2D nearest neighbour finds the same frame -> Hit@1 = 1.
    same = ViewSet(views.poses3d, views.keypoints2d[:, [0, 0]], views.visible[:, [0, 0]],
                            views.valid[:, [0, 0]], ("a", "b"), views.rows)
    res = protocol.cross_view_hit_at_k(baselines.Keypoints2DMethod(), same, ks=(1,))
    assert res.mean[0] == 1.0


def test_protocol_matches_a_float64_reference_on_a_dataset(tmp_path):
    """Frame rule, ranking and hit test against the protocol written again in float64 NumPy (conftest)."""
    from prpose.dataset import load_dataset
    from prpose.eval.testing import tiny_dataset

    tiny_dataset(tmp_path / "ds", sequences=4, frames=12, splits=("train", "test"))
    ds = load_dataset(tmp_path / "ds")
    views = views_from_dataset(ds, "test")
    # The frame rule: every input13 joint visible in every camera (these poses all normalise).
    rows = ds.indices(split="test")
    in13 = [kp.H36M17.index(j) for j in kp.INPUT13.joints]
    np.testing.assert_array_equal(views.rows, rows[np.asarray(ds.visibility[rows])[:, :, in13].all(axis=(1, 2))])
    method = baselines.Keypoints2DMethod()
    res = protocol.cross_view_hit_at_k(method, views, ks=(1, 5))
    feats = [f["x"] for f in protocol.compute_features(method, views)]
    ref = reference_hit_rates(views, feats, lambda q, x: ((q[:, None] - x[None]) ** 2).sum(-1), (1, 5))
    np.testing.assert_allclose([p.hit_rates for p in res.pairs], ref, atol=1e-12)
    assert 0 < res.mean[0] < 1  # the check can fail both ways


def test_views_from_dataset_subsamples_and_names_cameras(tmp_path):
    from prpose.eval.testing import tiny_dataset
    from prpose.dataset import load_dataset

    tiny_dataset(tmp_path / "ds", sequences=4, frames=10)
    ds = load_dataset(tmp_path / "ds")
    test_rows = ds.indices(split="test")
    v = views_from_dataset(ds, "test", every=3, cameras=["ring2", "ring0"])
    np.testing.assert_array_equal(v.rows, test_rows[::3])
    assert v.camera_names == ("ring2", "ring0")
    assert v.settings["every"] == 3 and v.settings["dropped_frames"] == 0
    with pytest.raises(PrposeError, match="ring9"):
        views_from_dataset(ds, "test", cameras=["ring9", "ring0"])
    with pytest.raises(PrposeError, match="every"):
        views_from_dataset(ds, "test", every=0)


def test_elevation_ring_sees_the_person_from_above():
    cams = elevation_ring_cameras(num_azimuths=4, elevations_deg=(0, 60), distance=5.0)
    assert len(cams) == 8 and cams[5].name == "az90_el60"
    standing = np.zeros((1, 17, 3))
    standing[0, :, 2] = np.linspace(0.0, 1.7, 17)  # a vertical stick centred on the rig's target
    for cam in cams:
        uv, depth = cam.project(standing, distort=False)
        assert (np.asarray(depth) > 0).all()
    # From 60 degrees above, the camera centre is high.
    assert cams[4].center[2] == pytest.approx(1.0 + 5.0 * math.sin(math.radians(60)))


def test_bad_arguments_are_named(views):
    with pytest.raises(PrposeError, match="kappa"):
        protocol.cross_view_hit_at_k(baselines.RandomMethod(), views, kappa=0)
    with pytest.raises(PrposeError, match="ks"):
        protocol.cross_view_hit_at_k(baselines.RandomMethod(), views, ks=(0,))
    with pytest.raises(PrposeError, match="poses3d_world"):
        views_from_cameras(np.zeros((3, 16, 3)), [])


# --------------------------------------------------------------------------------------------------------------
# Pr-VIPE's method and training validation's entry point (embedder_hit_at_k), with embedders whose output is
# known (the former tests of prpose.crossview).


@pytest.fixture(scope="module")
def ring_dataset(tmp_path_factory):
    import argparse

    from prpose.data_prep import synthetic
    from prpose.dataset import load_dataset

    out = tmp_path_factory.mktemp("cv") / "synthetic"
    assert synthetic.main(argparse.Namespace(out=str(out), sequences=10, frames=12, seed=3, rig="ring", cameras=3,
                                             overwrite=False)) == 0
    return load_dataset(out)


def _norm3d(p):
    p = np.asarray(p, np.float64)
    return (p - p[0]) / (np.linalg.norm(p[0] - p[7]) + np.linalg.norm(p[7] - p[8]))


class _CodeEmbedder:
    """A PoseEmbedder stand-in: call i (cameras are embedded in order) returns codes[i % len(codes)] as the means
    (frames with equal codes embed identically), K copies of it as the samples. Records the keypoints."""

    match_params = (1.0, 0.0, 0.1)

    def __init__(self, *codes, k=3):
        self.codes, self.k, self.calls = [np.asarray(c, np.float32) for c in codes], k, []

    def embed(self, keypoints, profile=None, scores=None, key=None):
        from prpose.inference import Embeddings

        self.calls.append((np.asarray(keypoints), profile))
        code = self.codes[(len(self.calls) - 1) % len(self.codes)]
        mean = code.reshape(len(code), -1)[:len(keypoints)]
        return Embeddings(mean, np.full_like(mean, 1e-3), np.repeat(mean[:, None], self.k, axis=1))


def test_perfect_embedding_hits_every_query(ring_dataset):
    n = ring_dataset.indices(split="test").size
    for ranking in ("l2", "match"):
        fake = _CodeEmbedder(np.arange(n) * 10.0)
        result = protocol.embedder_hit_at_k(fake, ring_dataset, "test", ks=(1, 5), ranking=ranking)
        assert result["hit@1"] == result["hit@5"] == 1.0
        assert result["num_pairs"] == 6 and len(result["per_pair"]) == 6 and result["num_frames"] == n
        assert {(r["query_camera"], r["index_camera"]) for r in result["per_pair"]} == {
            (a, b) for a in ring_dataset.camera_names for b in ring_dataset.camera_names if a != b}
    # Every call embeds the frames seen from one camera: (N, 17, 2) h36m17 pixels, the dataset's own values.
    rows = ring_dataset.indices(split="test")
    keypoints, profile = fake.calls[0]
    assert profile == "h36m17"
    np.testing.assert_array_equal(keypoints, np.asarray(ring_dataset.keypoints2d[rows, 0]))
    # k beyond the index: Hit@k counts every entry (here the query's own frame is always there).
    assert protocol.embedder_hit_at_k(_CodeEmbedder(np.zeros(n)), ring_dataset, "test", ks=(1, 10_000),
                                      ranking="l2")["hit@10000"] == 1.0


def test_retrieval_of_another_frame_matches_float64_reference(ring_dataset):
    rows = ring_dataset.indices(split="test")
    n = rows.size
    target = np.roll(np.arange(n), 1)  # camera 0 -> camera 1: query i's nearest index entry is frame i-1
    inverse = np.argsort(target)
    code = np.arange(n) * 10.0
    # Camera 0 (embedded first) gets `code`; camera 1 gets it permuted so that index entry target[i] sits exactly
    # on query i.
    fake = _CodeEmbedder(code, code[inverse], k=2)
    poses = np.stack([_norm3d(p) for p in np.asarray(ring_dataset.poses3d[rows])])
    # Hit when the retrieved pose, aligned onto the query's, is within kappa = 0.1.
    forward = np.mean([np_mpjpe_ref(poses[target[i]], poses[i]) < 0.1 for i in range(n)])
    backward = np.mean([np_mpjpe_ref(poses[inverse[j]], poses[j]) < 0.1 for j in range(n)])
    assert 0.0 < forward < 1.0  # the check can fail both ways

    result = protocol.embedder_hit_at_k(fake, ring_dataset, "test", ks=(1,), ranking="l2",
                                        cameras=list(ring_dataset.camera_names[:2]))
    first, second = result["per_pair"]
    assert (first["query_camera"], first["index_camera"]) == tuple(ring_dataset.camera_names[:2])
    assert first["hit@1"] == pytest.approx(forward, abs=1e-9)
    assert second["hit@1"] == pytest.approx(backward, abs=1e-9)
    assert result["hit@1"] == pytest.approx((forward + backward) / 2, abs=1e-9)


def test_subsampling_and_limits(ring_dataset):
    n = ring_dataset.indices(split="test").size
    fake = _CodeEmbedder(np.arange(n) * 10.0)
    half = protocol.embedder_hit_at_k(fake, ring_dataset, "test", ks=(1,), ranking="l2", every=2)
    assert half["num_frames"] == (n + 1) // 2
    few = protocol.embedder_hit_at_k(fake, ring_dataset, "test", ks=(1,), ranking="l2", max_frames=7)
    assert few["num_frames"] == 7


def test_bad_arguments_are_clear_errors(ring_dataset):
    fake = _CodeEmbedder(np.arange(1000.0))
    with pytest.raises(PrposeError, match="ranking: got 'cosine'"):
        protocol.embedder_hit_at_k(fake, ring_dataset, "test", ranking="cosine")
    with pytest.raises(PrposeError, match="every"):
        protocol.embedder_hit_at_k(fake, ring_dataset, "test", ranking="l2", every=0)
    with pytest.raises(PrposeError, match="candidates: got 0"):
        protocol.embedder_hit_at_k(fake, ring_dataset, "test", candidates=0)

    class Wrong:
        name = "wrong"

        def features(self, keypoints2d, visible, poses3d, profile="input13", camera=0):
            return {"x": np.zeros(len(keypoints2d))}

        def distances(self, query, index):
            return np.zeros((len(query["x"]), 2))

    with pytest.raises(PrposeError, match="method 'wrong' returned distances of shape"):
        protocol.cross_view_hit_at_k(Wrong(), views_from_dataset(ring_dataset, "test"), ks=(1,))


def test_two_stage_match_ranking_equals_exact_when_means_order_it(ring_dataset):
    # Zero-spread samples: the match distance is monotone in the distance of the means, so re-ranking any
    # candidate set that contains the true top k gives exactly the exhaustive ranking.
    n = ring_dataset.indices(split="test").size
    codes = np.random.default_rng(0).normal(size=(3, n, 4))
    kw = dict(ks=(1, 3), ranking="match")
    exact = protocol.embedder_hit_at_k(_CodeEmbedder(*codes, k=2), ring_dataset, "test", **kw)
    assert exact["candidates"] is None
    for c in (3, 5, n - 1):
        two = protocol.embedder_hit_at_k(_CodeEmbedder(*codes, k=2), ring_dataset, "test", candidates=c, **kw)
        assert two["candidates"] == c
        assert [p["hit@1"] for p in two["per_pair"]] == [p["hit@1"] for p in exact["per_pair"]]
        assert [p["hit@3"] for p in two["per_pair"]] == [p["hit@3"] for p in exact["per_pair"]]


def test_the_hit_test_takes_any_error_function(views):
    """pose_error replaces NP-MPJPE (e.g. windows of poses); here a constant error: no query ever hits."""
    method = baselines.Keypoints2DMethod()
    res = protocol.cross_view_hit_at_k(method, views, ks=(1, 5), pose_error=lambda q, r: np.ones(r.shape[:2]))
    np.testing.assert_array_equal(res.mean, [0.0, 0.0])
    seen = []

    def error(query, retrieved):
        seen.append((query.shape, retrieved.shape))
        return protocol.retrieved_np_mpjpe(query, retrieved)

    same = protocol.cross_view_hit_at_k(method, views, ks=(1, 5), pose_error=error)
    np.testing.assert_array_equal(same.mean, protocol.cross_view_hit_at_k(method, views, ks=(1, 5)).mean)
    assert seen[0] == ((views.num_frames, 17, 3), (views.num_frames, 5, 17, 3))
