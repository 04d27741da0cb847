"""Detected 2D as the protocol's input (`--source`), frames dropped and reported, and two-stage ranking.

Fixtures: eval.testing.tiny_dataset(detections=True) writes a format-v2 dataset whose detections look like
Human3.6M's Stacked Hourglass ones (noisy projections, no nose, one camera of one sequence without detections).
"""

import json

import numpy as np
import pytest
from conftest import reference_hit_rates

from prpose import keypoints as kp, protocol
from prpose.eval import baselines
from prpose.errors import PrposeError
from prpose.views import common_frames, input13_views, views_from_dataset

FRAMES = 12


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from prpose.eval.testing import tiny_dataset

    path = tmp_path_factory.mktemp("sources") / "ds"
    # Sequences 2, 3 and 5 are test; sequence 3 has no detections in camera 0.
    tiny_dataset(path, sequences=6, frames=FRAMES, splits=("train", "train", "test", "test", "val", "test"),
                 detections=True, missing_camera=(3, 0))
    return path


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    from prpose.eval.testing import tiny_dataset

    path = tmp_path_factory.mktemp("sources") / "plain"
    tiny_dataset(path, sequences=4, frames=8, splits=("train", "test"))
    return path



def test_detected_views_drop_and_report_the_missing_camera_and_the_nose(data):
    from prpose.dataset import load_dataset

    ds = load_dataset(data)
    gt = views_from_dataset(ds, "test", profile="h36m17")
    det = views_from_dataset(ds, "test", source="detected", profile="h36m17")
    assert gt.num_frames == 3 * FRAMES and gt.settings["dropped_frames"] == 0 and gt.settings["absent_joints"] == []
    # Sequence 3 has no detections in camera 0: its frames leave every pair, counted per camera.
    assert det.num_frames == 2 * FRAMES and det.settings["dropped_frames"] == FRAMES
    cam0 = ds.camera_names[0]
    assert det.settings["unusable_by_camera"][cam0] == FRAMES
    assert all(v == 0 for n, v in det.settings["unusable_by_camera"].items() if n != cam0)
    assert det.settings["absent_joints"] == ["nose"] and det.settings["source"] == "detected"
    assert set(np.asarray(ds.labels("sequence"))[det.rows]) == {"seq2", "seq5"}
    nose, head = kp.H36M17.index("nose"), kp.H36M17.index("head")
    assert not det.visible[..., nose].any() and (det.keypoints2d[..., nose, :] == 0).all()
    assert det.visible[..., head].all()
    # The hit test's labels are the same 3D poses; the 2D differs by the detector's noise.
    same = np.isin(gt.rows, det.rows)
    np.testing.assert_array_equal(gt.poses3d[same], det.poses3d)
    err = np.linalg.norm(gt.keypoints2d[same] - det.keypoints2d, axis=-1)[..., [head, 0, 1]]
    assert 0.5 < np.median(err) < 15.0
    # Both sources on the same frames.
    a, b = common_frames(gt, det)
    np.testing.assert_array_equal(a.rows, b.rows)
    assert a.num_frames == det.num_frames and a.settings["dropped_frames"] == FRAMES


def test_detected_source_needs_detections(plain):
    with pytest.raises(PrposeError, match="no detected 2D keypoints"):
        views_from_dataset(plain, "test", source="detected")
    with pytest.raises(PrposeError, match="source"):
        views_from_dataset(plain, "test", source="sh")


def test_2d_baseline_uses_the_head_top_where_the_nose_is_missing(data):
    det = views_from_dataset(data, "test", source="detected", profile="h36m17")
    k13, v13 = input13_views(det.keypoints2d[:, 1], det.visible[:, 1], "h36m17")
    assert v13.all()
    np.testing.assert_array_equal(k13[:, 0], det.keypoints2d[:, 1, kp.H36M17.index("head")])
    np.testing.assert_array_equal(k13[:, 1:], kp.convert(det.keypoints2d[:, 1], "h36m17", "input13")[:, 1:])
    # A source with a nose keeps it.
    gt = views_from_dataset(data, "test", profile="h36m17")
    k13, _ = input13_views(gt.keypoints2d[:, 0], gt.visible[:, 0], "h36m17")
    np.testing.assert_array_equal(k13, kp.convert(gt.keypoints2d[:, 0], "h36m17", "input13"))
    res = protocol.cross_view_hit_at_k(baselines.Keypoints2DMethod(), det, ks=(1, 5))
    assert 0.0 < res.mean[1] <= 1.0


def test_embedders_get_detections_with_the_nose_missing(data, embedder):
    det = views_from_dataset(data, "test", source="detected", profile="h36m17")
    method = protocol.EmbeddingMethod(embedder, "match")
    f = method.features(det.keypoints2d[:, 0], det.visible[:, 0], det.poses3d, profile="h36m17")
    nose_missing = embedder.embed(kp.convert(det.keypoints2d[:, 0], "h36m17", "input13"), "input13",
                                  scores=kp.convert(det.visible[:, 0], "h36m17", "input13", axis=-1).astype(float))
    np.testing.assert_allclose(f["mean"], nose_missing.mean, atol=1e-6)


def test_two_stage_match_ranking_agrees_with_a_float64_reference_and_exact(data, embedder):
    from prpose.index.kernels import pairwise_match_distance_np

    views = views_from_dataset(data, "test")
    n = views.num_frames
    exact = protocol.cross_view_hit_at_k(protocol.EmbeddingMethod(embedder, "match"), views, ks=(1, 5))
    wide = protocol.cross_view_hit_at_k(protocol.EmbeddingMethod(embedder, "match", candidates=n), views, ks=(1, 5))
    np.testing.assert_array_equal(exact.mean, wide.mean)  # candidates >= N is exact
    feats = protocol.compute_features(protocol.EmbeddingMethod(embedder, "match"), views)
    d = feats[0]["mean"].shape[1]
    rows = [np.concatenate([f["mean"], f["samples"].reshape(n, -1)], axis=1).astype(np.float64) for f in feats]
    a, b, s = embedder.match_params

    def match(q, x):
        return pairwise_match_distance_np(q[:, d:].reshape(len(q), -1, d), x[:, d:].reshape(len(x), -1, d), a, b, s)

    def l2_of_means(q, x):
        return ((q[:, None, :d] - x[None, :, :d]) ** 2).sum(-1)

    for c in (5, 12):
        ours = protocol.cross_view_hit_at_k(protocol.EmbeddingMethod(embedder, "match", candidates=c), views,
                                            ks=(1, 5))
        ref = reference_hit_rates(views, rows, match, (1, 5), candidates=c, coarse=l2_of_means)
        np.testing.assert_allclose([p.hit_rates for p in ours.pairs], ref, atol=1e-12)
    # Only candidates get a finite distance, and those are the exact match distances.
    m = protocol.EmbeddingMethod(embedder, "match", candidates=4)
    f = m.features(views.keypoints2d[:, 0], views.visible[:, 0], views.poses3d)
    cand = m.distances(protocol.take(f, np.arange(3)), f)
    assert isinstance(cand, protocol.Candidates) and cand.ids.shape == (3, 4)
    got = cand.dense(views.num_frames)
    full = protocol.EmbeddingMethod(embedder, "match").distances(protocol.take(f, np.arange(3)), f)
    assert (np.isfinite(got).sum(axis=1) == 4).all()
    # (the all-pairs kernel expands |q - x|^2 in float32; the re-rank takes exact differences)
    np.testing.assert_allclose(got[np.isfinite(got)], full[np.isfinite(got)], rtol=1e-3, atol=1e-3)


def test_pose_shape_descriptor_is_invariant_like_np_mpjpe():
    from prpose.synthetic import generate_motions

    poses = np.concatenate(generate_motions(2, 10, seed=4)).astype(np.float64)
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    moved = 2.5 * poses @ q.T + np.array([0.3, -1.0, 2.0])
    np.testing.assert_allclose(baselines.pose_shape_descriptor(moved), baselines.pose_shape_descriptor(poses),
                               rtol=1e-4, atol=1e-5)
    d = baselines.pose_shape_descriptor(poses)
    assert d.shape == (len(poses), 136) and np.allclose((d ** 2).mean(axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize("candidates", [3, 8])
def test_two_stage_pose_ranking_equals_exact_on_its_candidates(data, candidates):
    views = views_from_dataset(data, "test")
    exact = baselines.OracleMethod(candidates=None)
    two = baselines.OracleMethod(candidates=candidates)
    f = exact.features(None, None, views.poses3d)
    full = exact.distances(protocol.take(f, np.arange(6)), f)
    got = two.distances(protocol.take(f, np.arange(6)), f).dense(views.num_frames)
    fin = np.isfinite(got)
    assert (fin.sum(axis=1) == candidates).all()
    np.testing.assert_allclose(got[fin], full[fin], rtol=1e-4, atol=1e-5)
    assert (got.argmin(axis=1) == full.argmin(axis=1)).all()  # each query's own pose is a candidate
    lift = baselines.LiftingMethod(lambda k, v: views.poses3d[:len(k)], candidates=candidates)
    lf = lift.features(views.keypoints2d[:, 0], views.visible[:, 0], None)
    np.testing.assert_allclose(lift.distances(protocol.take(lf, np.arange(6)), lf).dense(views.num_frames)[fin],
                               full[fin], rtol=1e-4, atol=1e-5)


def test_cli_both_sources_prints_progress_and_records_drops(data, tmp_path, capsys, monkeypatch):
    from prpose import cli

    monkeypatch.setenv("PRPOSE_PROGRESS_INTERVAL", "0")  # a progress line at every pair: this run is short

    out = tmp_path / "out.json"
    code = cli.main(["eval", "--data", str(data), "--source", "both", "--ks", "1", "5", "--baselines", "oracle",
                     "2d", "--json", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.out
    # Progress (prpose.progress): not a terminal here, so plain lines on stderr, one per pair with an estimate.
    assert "eval [detected] 2D keypoints: 1/6 (17%)" in captured.err and "ETA" in captured.err
    assert "eval [detected] 2D keypoints: 6/6 (100%)" in captured.err and "hit1=" in captured.err
    assert "joints the source lacks: nose" in printed
    res = json.loads(out.read_text())
    s = res["settings"]
    assert s["frames"] == 2 * FRAMES and s["frames_selected"] == 3 * FRAMES
    assert s["sources"]["detected"]["unusable_by_camera"]["ring0"] == FRAMES
    assert s["ranking"] == "two-stage, 100 candidates"
    rows = {(r["source"], r["method"]): r for r in res["crossview"]}
    assert set(rows) == {("gt", "oracle (3D NP-MPJPE)"), ("gt", "2D keypoints"), ("detected", "2D keypoints")}
    assert rows[("gt", "oracle (3D NP-MPJPE)")]["mean"]["hit@1"] == 1.0
    assert all(p["queries"] == 2 * FRAMES for r in rows.values() for p in r["pairs"])
    assert cli.main(["eval", "--data", str(data), "--candidates", "0"]) == 2
    assert "--candidates" in capsys.readouterr().err


def test_head_as_nose_feeds_the_head_top_to_an_input13_embedder(data, embedder):
    det = views_from_dataset(data, "test", source="detected", profile="h36m17")
    f = protocol.EmbeddingMethod(embedder, "l2", head_as_nose=True).features(
        det.keypoints2d[:, 0], det.visible[:, 0], det.poses3d, profile="h36m17")
    k13, _ = input13_views(det.keypoints2d[:, 0], det.visible[:, 0], "h36m17")
    np.testing.assert_allclose(f["mean"], embedder.embed(k13, "input13").mean, atol=1e-6)
    g = protocol.EmbeddingMethod(embedder, "l2").features(det.keypoints2d[:, 0], det.visible[:, 0], det.poses3d,
                                                          profile="h36m17")
    assert not np.allclose(f["mean"], g["mean"])


@pytest.mark.parametrize("smoothing", [0.1, 0.0])
def test_match_rerank_equals_the_float64_reference(smoothing):
    from prpose.index.kernels import match_distance_np

    rng = np.random.default_rng(3)
    q = rng.normal(size=(5, 20, 16)).astype(np.float32)
    x = (rng.normal(size=(5, 7, 20, 16)) * 2).astype(np.float32)
    got = protocol._match_rerank(q, x, 1.9, 4.0, smoothing)
    ref = match_distance_np(q[:, None].astype(np.float64), x.astype(np.float64), 1.9, 4.0, smoothing)
    assert got.shape == (5, 7) and np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_progress_reports_every_pair_with_an_estimate(data):
    import time

    views = views_from_dataset(data, "test")
    lines = []
    line = protocol.pair_line("2D", (1, 5), time.perf_counter())
    res = protocol.cross_view_hit_at_k(baselines.Keypoints2DMethod(), views, ks=(1, 5),
                                       progress=lambda *a: lines.append(line(*a)))
    assert len(lines) == len(res.pairs) == 6
    assert lines[0].startswith("2D: pair 1/6 (ring0 -> ring1,") and "s left" in lines[0]
    assert lines[-1].endswith("about 0 s left")
