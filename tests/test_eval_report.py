"""The markdown report: every section and plot from a fabricated results dict."""

from prpose.eval import report


def _result(method, h1, h10):
    pairs = [{"query_camera": q, "index_camera": i, "queries": 10, "index": 10, "hit@1": h1, "hit@10": h10}
             for q in "ab" for i in "ab" if q != i]
    return {"method": method, "ks": [1, 10], "kappa": 0.1, "mean": {"hit@1": h1, "hit@10": h10}, "pairs": pairs}


def test_report_has_every_section_and_plot(tmp_path):
    res = {
        "settings": {"ks": [1, 10], "kappa": 0.1, "split": "test"},
        "crossview": [_result("Pr-VIPE (match probability)", 0.5, 0.9), _result("2D keypoints", 0.2, 0.4)],
        "expected_random": {"method": "random (expected)", "mean": {"hit@1": 0.01, "hit@10": 0.1}},
        "unseen_views": {"rig": "ring", "results": [_result("Pr-VIPE (match probability)", 0.4, 0.8)]},
        "occlusion": [{"method": "2D keypoints", "ks": [1, 10], "settings": [
            {"setting": "random 0%", "rate": 0.0, "mean": {"hit@1": 0.2}},
            {"setting": "random 20%", "rate": 0.2, "mean": {"hit@1": 0.1}},
            {"setting": "left arm", "rate": None, "mean": {"hit@1": 0.15}}]}],
        "uncertainty": {"method": "Pr-VIPE", "spearman_sigma_error": 0.3, "spearman_sigma_hit": -0.2, "bins": [
            {"sigma_low": 0.1, "sigma_high": 0.2, "queries": 5, "hit@1": 0.8, "mean_top1_np_mpjpe": 0.05},
            {"sigma_low": 0.2, "sigma_high": 0.3, "queries": 5, "hit@1": 0.4, "mean_top1_np_mpjpe": 0.12}]},
        "alignment": {"offset": [{"method": "oracle", "takes": 3, "mean_error_frames": 0.0,
                                  "median_error_frames": 0.0}],
                      "content_retrieval": [{"method": "oracle", "queries": 4, "accuracy": 0.75, "chance": 0.3}]},
        "probes": {"2D": {"features": 26, "pose": {"r2": 0.5, "mpjpe": 0.2},
                          "viewpoint": {"azimuth_error_deg": 20.0, "elevation_error_deg": 3.0},
                          "label": {"accuracy": 0.6}}},
    }
    md = report.write_report(res, tmp_path).read_text()
    for heading in ("Cross-view Hit@k", "Per camera pair", "never seen", "Occlusion", "Uncertainty",
                    "Video alignment", "Linear probes"):
        assert heading in md
    assert "| Pr-VIPE (match probability) | 50 | 90 |" in md
    assert "| random (expected) | 1 | 10 |" in md
    for png in ("hit_at_k.png", "pairs_hit1.png", "unseen_pairs_hit1.png", "occlusion.png",
                "sigma_calibration.png"):
        assert (tmp_path / png).stat().st_size > 1000
        assert f"({png})" in md


def test_pair_matrix_rows_are_query_cameras():
    r = _result("m", 0.0, 0.0)
    r["pairs"][0]["hit@1"] = 0.7  # query a, index b
    names, m = report.pair_matrix(r, 1)
    assert names == ["a", "b"] and m[0, 1] == 0.7 and m[1, 0] == 0.0
