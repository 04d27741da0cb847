"""The cross-view Hit@k protocol: known answers on synthetic data (oracle, random, duplicated cameras)."""

import math

import numpy as np
import pytest

from prpose.eval import baselines, protocol
from prpose.errors import PrposeError


def _np_mpjpe_ref(pred, target):
    """Independent float64 NP-MPJPE (pred aligned onto target: rotation without reflection, scale, shift)."""
    p = pred - pred.mean(0)
    t = target - target.mean(0)
    u, s, vt = np.linalg.svd(p.T @ t)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    rot = u @ fix @ vt
    scale = (s * np.diag(fix)).sum() / (p ** 2).sum()
    return np.linalg.norm(scale * p @ rot - t, axis=1).mean()


@pytest.fixture(scope="module")
def views():
    from prpose.camera import ring_rig
    from prpose.synthetic import generate_motions

    poses = np.concatenate(generate_motions(3, 20, seed=1))
    return protocol.views_from_cameras(poses, ring_rig(3, 4.0, 1.5))


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
    ref = np.array([[_np_mpjpe_ref(r[i, j], q[i]) for j in range(3)] for i in range(5)])
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
    same = protocol.ViewSet(views.poses3d, views.keypoints2d[:, [0, 0]], views.visible[:, [0, 0]],
                            views.valid[:, [0, 0]], ("a", "b"), views.rows)
    res = protocol.cross_view_hit_at_k(baselines.Keypoints2DMethod(), same, ks=(1,))
    assert res.mean[0] == 1.0


def test_protocol_agrees_with_prpose_crossview(tmp_path):
    """The generic protocol and the training-time validation (prpose.crossview) give the same tables."""
    from prpose.eval.testing import tiny_dataset
    from prpose.crossview import cross_view_hit_at_k as crossview_hit
    from prpose.dataset import load_dataset

    tiny_dataset(tmp_path / "ds", sequences=4, frames=12, splits=("train", "test"))
    ds = load_dataset(tmp_path / "ds")

    def embed_fn_h36m17(k17):  # normalised 2D as a deterministic "embedding"
        x = baselines.normalized_2d_features(protocol.kp.convert(k17, "h36m17", "input13"), None)
        return x, np.ones_like(x), x[:, None]

    ref = crossview_hit(embed_fn_h36m17, ds, "test", ks=(1, 5), ranking="l2")
    views = protocol.views_from_dataset(ds, "test")
    res = protocol.cross_view_hit_at_k(baselines.Keypoints2DMethod(), views, ks=(1, 5))
    assert ref["num_frames"] == views.num_frames
    for k, v in zip(res.ks, res.mean):
        assert v == pytest.approx(ref[f"hit@{k}"])
    for mine, theirs in zip(res.to_dict()["pairs"], ref["per_pair"]):
        assert (mine["query_camera"], mine["index_camera"]) == (theirs["query_camera"], theirs["index_camera"])
        assert mine["hit@1"] == pytest.approx(theirs["hit@1"])


def test_views_from_dataset_subsamples_and_names_cameras(tmp_path):
    from prpose.eval.testing import tiny_dataset
    from prpose.dataset import load_dataset

    tiny_dataset(tmp_path / "ds", sequences=4, frames=10)
    ds = load_dataset(tmp_path / "ds")
    test_rows = ds.indices(split="test")
    v = protocol.views_from_dataset(ds, "test", every=3, cameras=["ring2", "ring0"])
    np.testing.assert_array_equal(v.rows, test_rows[::3])
    assert v.camera_names == ("ring2", "ring0")
    assert v.settings["every"] == 3 and v.settings["dropped_frames"] == 0
    with pytest.raises(PrposeError, match="ring9"):
        protocol.views_from_dataset(ds, "test", cameras=["ring9", "ring0"])
    with pytest.raises(PrposeError, match="every"):
        protocol.views_from_dataset(ds, "test", every=0)


def test_elevation_ring_sees_the_person_from_above():
    cams = protocol.elevation_ring_cameras(num_azimuths=4, elevations_deg=(0, 60), distance=5.0)
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
        protocol.views_from_cameras(np.zeros((3, 16, 3)), [])
