"""Sigma calibration: Spearman against a hand case, binning on a fabricated result with a known answer."""

import numpy as np
import pytest

from prpose import protocol
from prpose.eval import uncertainty
from prpose.errors import PrposeError


def test_spearman_hand_cases():
    assert uncertainty.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert uncertainty.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ties get average ranks: x ranks (0.5, 0.5, 2, 3) against y ranks (0, 1, 2, 3).
    rx, ry = np.array([0.5, 0.5, 2, 3]) - 1.5, np.arange(4) - 1.5
    assert uncertainty.spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(
        (rx * ry).sum() / np.sqrt((rx ** 2).sum() * (ry ** 2).sum()))
    assert np.isnan(uncertainty.spearman([1, 1, 1], [1, 2, 3]))


def test_sigma_summary_is_the_geometric_mean():
    np.testing.assert_allclose(uncertainty.sigma_summary(np.array([[1.0, 4.0], [2.0, 2.0]])), [2.0, 2.0])
    with pytest.raises(PrposeError, match="stddev"):
        uncertainty.sigma_summary(np.array([[0.0, 1.0]]))


def test_calibration_bins_a_result_where_high_sigma_misses():
    n = 100
    sigma = np.linspace(0.1, 1.0, n)
    hits = (sigma < 0.55)[:, None]  # the confident half hits, the uncertain half misses
    pair = protocol.PairResult("a", "b", hits.mean(0), np.arange(n), hits, n, np.where(hits[:, 0], 0.05, 0.3))
    result = protocol.CrossViewResult("m", (1,), 0.1, ("a", "b"), [pair], 0.0)
    feats = [{"stddev": np.repeat(sigma[:, None], 4, 1)}, {}]
    cal = uncertainty.sigma_calibration(result, feats, num_bins=4)
    assert [b["queries"] for b in cal["bins"]] == [25, 25, 25, 25]
    assert [b["hit@1"] for b in cal["bins"]] == [1.0, 1.0, 0.0, 0.0]
    assert cal["spearman_sigma_error"] > 0.8 and cal["spearman_sigma_hit"] < -0.8
    with pytest.raises(PrposeError, match="stddev"):
        uncertainty.sigma_calibration(result, [{}, {}])
