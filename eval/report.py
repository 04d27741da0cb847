"""A markdown report with PNG plots, written from the evaluation's JSON results (so it can be regenerated).

Plots (matplotlib, Agg backend): Hit@k vs k for every method, per-camera-pair heat map, occlusion curves,
sigma calibration. Tables: the cross-view table (mean over camera pairs), unseen views, occlusion, alignment,
probes; the settings that produced them.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pair_matrix(result: Mapping, k: int) -> tuple[list[str], np.ndarray]:
    """(camera names, (C, C) Hit@k) from a result dict's "pairs"; rows = query camera, NaN diagonal."""
    names = list(dict.fromkeys([p["query_camera"] for p in result["pairs"]] +
                               [p["index_camera"] for p in result["pairs"]]))
    m = np.full((len(names), len(names)), np.nan)
    for p in result["pairs"]:
        m[names.index(p["query_camera"]), names.index(p["index_camera"])] = p[f"hit@{k}"]
    return names, m


def plot_hit_curves(results: Sequence[Mapping], path, title: str = "Cross-view retrieval") -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        ks = sorted(int(k.split("@")[1]) for k in r["mean"])
        ax.plot(ks, [100 * r["mean"][f"hit@{k}"] for k in ks], marker="o", label=r["method"])
    ax.set_xlabel("k")
    ax.set_xticks(sorted({int(k.split("@")[1]) for r in results for k in r["mean"]}))
    ax.set_ylabel("Hit@k (%)")
    ax.set_ylim(0, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_pair_heatmap(result: Mapping, k: int, path) -> None:
    plt = _plt()
    names, m = pair_matrix(result, k)
    size = max(4.0, 0.5 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(100 * m, vmin=0, vmax=100, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("index camera")
    ax.set_ylabel("query camera")
    if len(names) <= 8:
        for i in range(len(names)):
            for j in range(len(names)):
                if not np.isnan(m[i, j]):
                    ax.text(j, i, f"{100 * m[i, j]:.0f}", ha="center", va="center", fontsize=8,
                            color="k" if m[i, j] > 0.6 else "w")  # readable on viridis' yellow and purple
    fig.colorbar(im, ax=ax, label=f"Hit@{k} (%)")
    ax.set_title(f"{result['method']}: Hit@{k} per camera pair", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_occlusion(sweeps: Sequence[Mapping], path, k: int = 1) -> None:
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for s in sweeps:
        rand = [r for r in s["settings"] if r["rate"] is not None]
        a1.plot([100 * r["rate"] for r in rand], [100 * r["mean"][f"hit@{k}"] for r in rand], marker="o",
                label=s["method"])
    a1.set_xlabel("keypoint dropout rate (%)")
    a1.set_ylabel(f"Hit@{k} (%)")
    a1.set_ylim(0, 100)
    a1.grid(alpha=0.3)
    a1.legend(fontsize=7)
    pats = [r["setting"] for r in sweeps[0]["settings"] if r["rate"] is None] if sweeps else []
    width = 0.8 / max(1, len(sweeps))
    for i, s in enumerate(sweeps):
        vals = {r["setting"]: r["mean"][f"hit@{k}"] for r in s["settings"]}
        a2.bar(np.arange(len(pats)) + i * width, [100 * vals.get(p, np.nan) for p in pats], width,
               label=s["method"])
    a2.set_xticks(np.arange(len(pats)) + width * (len(sweeps) - 1) / 2, pats, fontsize=8)
    a2.set_ylabel(f"Hit@{k} (%)")
    a2.set_ylim(0, 100)
    a2.set_title("structured occlusion", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sigma_calibration(calibration: Mapping, path) -> None:
    plt = _plt()
    bins = calibration["bins"]
    fig, ax = plt.subplots(figsize=(6, 4))
    centers = [0.5 * (b["sigma_low"] + b["sigma_high"]) for b in bins]
    ax.plot(centers, [100 * b["hit@1"] for b in bins], marker="o")
    for c, b in zip(centers, bins):
        ax.annotate(f"n={b['queries']}", (c, 100 * b["hit@1"]), fontsize=7, textcoords="offset points",
                    xytext=(0, 6), ha="center")
    ax.set_xlabel("predicted sigma (geometric mean over dimensions), bin centre")
    ax.set_ylabel("Hit@1 (%)")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    ax.set_title(f"{calibration['method']}: Hit@1 by predicted sigma "
                 f"(Spearman sigma vs error {calibration['spearman_sigma_error']:.2f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e3 else f"{v:.3f}".rstrip("0").rstrip(".")
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _hit_rows(results: Sequence[Mapping], ks: Sequence[int]):
    return [[r["method"]] + [None if r["mean"].get(f"hit@{k}") is None else round(100 * r["mean"][f"hit@{k}"], 1)
                             for k in ks] for r in results]


def _main_row(rows: Sequence[Mapping]) -> Mapping:
    """The row worth a heat map: Pr-VIPE by match probability, else the first non-bound baseline."""
    for r in rows:
        if "match" in r["method"]:
            return r
    return next((r for r in rows if not r["method"].startswith(("oracle", "random"))), rows[0])


def write_report(results: Mapping, directory) -> pathlib.Path:
    """Write `report.md` and its PNGs into `directory` from the eval JSON; returns the markdown path."""
    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ks = results.get("settings", {}).get("ks", [1, 5, 10, 20])
    md = ["# prpose cross-view retrieval evaluation", ""]
    settings = results.get("settings", {})
    md += ["## Settings", "", "```json", json.dumps(settings, indent=1, default=str), "```", ""]
    cv = results.get("crossview", [])
    if cv:
        rows = list(cv) + ([results["expected_random"]] if results.get("expected_random") else [])
        md += ["## Cross-view Hit@k (mean over ordered camera pairs, %)", "",
               _table(["method"] + [f"Hit@{k}" for k in ks], _hit_rows(rows, ks)), ""]
        plot_hit_curves(cv, out / "hit_at_k.png")
        md += ["![Hit@k vs k](hit_at_k.png)", ""]
        main = _main_row(cv)
        plot_pair_heatmap(main, 1, out / "pairs_hit1.png")
        names, m = pair_matrix(main, 1)
        md += [f"### Per camera pair: {main['method']}, Hit@1 (%) (row: query camera, column: index camera)", "",
               _table(["query \\ index"] + names,
                      [[n] + [None if np.isnan(v) else round(100 * v, 1) for v in m[i]]
                       for i, n in enumerate(names)]), "", "![per-pair heat map](pairs_hit1.png)", ""]
    unseen = results.get("unseen_views")
    if unseen:
        md += ["## Views never seen in training (%)", "", f"Rig: {unseen.get('rig', '')}", "",
               _table(["method"] + [f"Hit@{k}" for k in ks], _hit_rows(unseen["results"], ks)), ""]
        main = _main_row(unseen["results"])
        plot_pair_heatmap(main, 1, out / "unseen_pairs_hit1.png")
        md += ["![unseen views per-pair heat map](unseen_pairs_hit1.png)", ""]
    occ = results.get("occlusion")
    if occ:
        kk = occ[0]["ks"]
        settings_names = [r["setting"] for r in occ[0]["settings"]]
        md += ["## Occlusion robustness (queries with missing keypoints; Hit@%d, %%)" % kk[0], "",
               _table(["method"] + settings_names,
                      [[s["method"]] + [round(100 * r["mean"][f"hit@{kk[0]}"], 1) for r in s["settings"]]
                       for s in occ]), ""]
        plot_occlusion(occ, out / "occlusion.png", k=kk[0])
        md += ["![occlusion curves](occlusion.png)", ""]
    unc = results.get("uncertainty")
    if unc:
        md += ["## Uncertainty: Hit@1 by predicted sigma", "",
               f"Spearman(sigma, top-1 NP-MPJPE) = {unc['spearman_sigma_error']:.3f}; "
               f"Spearman(sigma, hit) = {unc['spearman_sigma_hit']:.3f}", "",
               _table(["sigma range", "queries", "Hit@1 (%)", "mean top-1 NP-MPJPE"],
                      [[f"{b['sigma_low']:.3f}-{b['sigma_high']:.3f}", b["queries"], round(100 * b["hit@1"], 1),
                        b["mean_top1_np_mpjpe"]] for b in unc["bins"]]), ""]
        plot_sigma_calibration(unc, out / "sigma_calibration.png")
        md += ["![sigma calibration](sigma_calibration.png)", ""]
    ali = results.get("alignment")
    if ali:
        md += ["## Video alignment (DTW on per-frame distances)", ""]
        rows = []
        for name, entries in ali.items():
            for e in entries:
                rows.append([name, e["method"], e.get("takes", e.get("pairs", e.get("queries"))),
                             e.get("mean_error_frames", e.get("accuracy")), e.get("median_error_frames",
                                                                                  e.get("chance"))])
        md += [_table(["experiment", "method", "n", "mean error (frames) / accuracy",
                       "median error (frames) / chance"], rows), ""]
    probes = results.get("probes")
    if probes:
        md += ["## Linear probes on frozen features (test takes)", ""]
        rows = []
        for name, p in probes.items():
            vp, lab = p.get("viewpoint", {}), p.get("label", {})
            rows.append([name, p["features"], p["pose"]["r2"], p["pose"]["mpjpe"], vp.get("azimuth_error_deg"),
                         vp.get("elevation_error_deg"), lab.get("accuracy")])
        md += [_table(["features", "dim", "3D pose R^2", "3D pose MPJPE", "azimuth error (deg)",
                       "elevation error (deg)", "label accuracy"], rows), ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
