"""Model-based rows: the Pr-VIPE rows equal a float64 reference of the protocol and training validation's
numbers; the lifting baseline trains, saves and reloads."""

import numpy as np
import pytest
from conftest import reference_hit_rates

from prpose import protocol
from prpose.eval import baselines
from prpose.views import views_from_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from prpose.eval.testing import tiny_dataset

    path = tmp_path_factory.mktemp("models") / "ds"
    tiny_dataset(path, sequences=4, frames=12, splits=("train", "test"))
    return path



@pytest.mark.parametrize("ranking", ["match", "l2"])
def test_pr_vipe_rows_equal_a_float64_reference_and_validation(data, embedder, ranking):
    from prpose.dataset import load_dataset
    from prpose.index.kernels import pairwise_match_distance_np

    ds = load_dataset(data)
    views = views_from_dataset(ds, "test", profile="h36m17")
    method = protocol.EmbeddingMethod(embedder, ranking, index_chunk=8)  # chunking must not change anything
    res = protocol.cross_view_hit_at_k(method, views, ks=(1, 5), query_chunk=6)
    feats = protocol.compute_features(method, views)
    if ranking == "match":
        a, b, s = embedder.match_params
        ref = reference_hit_rates(views, [f["samples"].astype(np.float64) for f in feats],
                                  lambda q, x: pairwise_match_distance_np(q, x, a, b, s), (1, 5))
    else:
        ref = reference_hit_rates(views, [f["mean"].astype(np.float64) for f in feats],
                                  lambda q, x: ((q[:, None] - x[None]) ** 2).sum(-1), (1, 5))
    np.testing.assert_allclose([p.hit_rates for p in res.pairs], ref, atol=1e-12)
    # Training validation (prpose.training.validate) reports the same protocol's numbers.
    val = protocol.embedder_hit_at_k(embedder, ds, "test", ks=(1, 5), ranking=ranking)
    assert [val["hit@1"], val["hit@5"]] == res.mean.tolist()
    assert val["num_frames"] == views.num_frames and val["ranking"] == ranking
    feats = method.features(views.keypoints2d[:, 0], views.visible[:, 0], views.poses3d, profile="h36m17")
    assert feats["stddev"].shape == feats["mean"].shape and (feats["stddev"] > 0).all()
    if ranking == "match":
        # Each camera draws its own samples: the same views as camera 1 keep their Gaussians but get other noise
        # (one key for all cameras gave a frame the same noise in every camera, pulling its matches together).
        again = method.features(views.keypoints2d[:, 0], views.visible[:, 0], views.poses3d, profile="h36m17")
        other = method.features(views.keypoints2d[:, 0], views.visible[:, 0], views.poses3d, profile="h36m17",
                                camera=1)
        np.testing.assert_array_equal(again["samples"], feats["samples"])
        np.testing.assert_array_equal(other["mean"], feats["mean"])
        noise0 = (feats["samples"] - feats["mean"][:, None]) / feats["stddev"][:, None]
        noise1 = (other["samples"] - other["mean"][:, None]) / other["stddev"][:, None]
        assert abs(np.corrcoef(noise0.ravel(), noise1.ravel())[0, 1]) < 0.1


def test_match_distances_equal_the_numpy_reference(data, embedder):
    from prpose.index.kernels import pairwise_match_distance_np

    views = views_from_dataset(data, "test")
    method = protocol.EmbeddingMethod(embedder, "match", index_chunk=5)
    f = method.features(views.keypoints2d[:, 1], views.visible[:, 1], views.poses3d)
    got = method.distances(protocol.take(f, np.arange(3)), f)
    ref = pairwise_match_distance_np(f["samples"][:3].astype(np.float64), f["samples"].astype(np.float64),
                                     *embedder.match_params)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_lifter_trains_reloads_and_ranks(data, tmp_path):
    from prpose.eval.lifting import Lifter, train_lifter
    from prpose.config import from_overrides
    from prpose.errors import PrposeError
    from prpose.training import read_metrics

    cfg = from_overrides("tiny", ["train.steps=30"])
    info = train_lifter(cfg, data, tmp_path / "lift", log=lambda *a: None, progress=False)
    losses = [row["loss"] for row in read_metrics(tmp_path / "lift") if "loss" in row]
    assert info["steps"] == 30 and info["final_loss"] == losses[-1] and losses[-1] < losses[0]  # it learns
    lifter = Lifter(tmp_path / "lift")
    views = views_from_dataset(data, "test")
    lifted = lifter.lift(views.keypoints2d[:, 0], views.visible[:, 0])
    assert lifted.shape == (views.num_frames, 17, 3) and np.isfinite(lifted).all()
    res = protocol.cross_view_hit_at_k(baselines.LiftingMethod(lifter.lift), views, ks=(1,))
    assert 0.0 <= res.mean[0] <= 1.0
    with pytest.raises(PrposeError, match="not a lifter run"):
        Lifter(tmp_path)
    # The run is an ordinary run directory of the one trainer: it resumes (here: nothing left to do) ...
    assert train_lifter(cfg, data, tmp_path / "lift", log=lambda *a: None, progress=False)["steps"] == 30
    # ... and it is not a pose embedder.
    from prpose.inference import load_model

    with pytest.raises(PrposeError, match="train.task='lifting', not a pose embedder"):
        load_model(tmp_path / "lift")
    # The former lifter format is refused with the command that retrains it.
    old = tmp_path / "old"
    old.mkdir()
    (old / "lifter_config.json").write_text(cfg.to_json())
    np.savez(old / "lifter_weights.npz", np.zeros(3))
    for call in (lambda: Lifter(old), lambda: train_lifter(cfg, data, old, log=lambda *a: None)):
        with pytest.raises(PrposeError, match="former format.*retrain it.*--train-lifter"):
            call()


def test_lifter_is_not_built_from_an_embedding_run(tmp_path):
    from prpose.config import get_preset, save_config
    from prpose.errors import PrposeError
    from prpose.eval.lifting import Lifter

    save_config(get_preset("tiny"), tmp_path)
    with pytest.raises(PrposeError, match="its train.task is 'embedding'"):
        Lifter(tmp_path)
