"""Real data: cross-view Hit@k when the index entries' samples are regenerated from (mean, stddev) instead of the
embedder's randomly keyed draws.

    .venv/bin/python bench/bench_regenerated_hitk.py --data /work/data/mocap --every 5     # packaged prpose-cmu-v1

A pose index keeps, for every entry, the samples `prpose.index.storage.regenerate_samples(mean, stddev)` (float32 /
float16 storage store them; the default "gaussian" storage regenerates them from the float16 stddev). This runs the
cross-view protocol (prpose.protocol: every ordered camera pair, queries of one camera against the entries of
another, a hit when a retrieved 3D pose is within NP-MPJPE kappa = 0.1; two-stage ranking, --candidates entries
nearest by mean L2 re-ranked by match distance) on the same queries (embedded with the embedder's samples, as
`prpose query` embeds them) with the entries' samples taken four ways:
  * embedder (baseline)       - the embedder's own samples, one key per camera: what `prpose eval` ranks;
  * embedder, another key     - the same Gaussians drawn with another key: the Monte Carlo noise of K samples;
  * regenerated, f32 stddev   - float32 / float16 storage;
  * regenerated, f16 stddev   - "gaussian" storage (the default of `prpose index build`).
Prints Hit@k per row, the change against the baseline and against the other key with its paired standard error
over queries, and the share of queries whose top-1 hit is the same (same NP-MPJPE).

Why both: until `prpose eval` keyed each camera's draws separately (prpose.protocol.camera_key), it embedded every
camera's views with the same key, and row i's samples use fold_in(key, i), so a query and its own frame seen by the
other camera (its best match) shared their noise draws, which pulled their samples together: measured here with
prpose-cmu-v1 on the mocap test split (every 5th frame, 21,264 queries), that baseline read Hit@1 79.98 against
79.44 for another key and 79.55 / 79.54 regenerated. Now every row draws the entries' noise independently of the
queries'.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="prepared dataset (e.g. /work/data/mocap)")
    p.add_argument("--model", default=None, help="training run or exported model (default: the packaged model)")
    p.add_argument("--split", default="test")
    p.add_argument("--every", type=int, default=5, help="keep every n-th frame of the split")
    p.add_argument("--candidates", type=int, default=100, help="entries re-ranked per query (two-stage)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10, 20])
    args = p.parse_args(argv)

    import jax

    from prpose import protocol
    from prpose.dataset import load_dataset
    from prpose.index.storage import regenerate_samples
    from prpose.inference import load_model
    from prpose.views import views_from_dataset

    t0 = time.perf_counter()
    model = load_model(args.model)
    views = views_from_dataset(load_dataset(args.data), args.split, args.every, profile="h36m17")
    method = protocol.EmbeddingMethod(model, "match", candidates=args.candidates)
    print(f"# model {model.fingerprint} (K={model.num_samples}, D={model.embedding_dim}); {args.data} split "
          f"{args.split!r} every {args.every}: {views.num_frames} frames x {views.num_cameras} cameras; two-stage "
          f"ranking, {args.candidates} candidates; load average {os.getloadavg()[0]:.2f}", flush=True)
    base = protocol.compute_features(method, views)  # the embedder's samples, one key per camera

    def with_samples(make):
        return [dict(f, samples=make(c, f)) for c, f in enumerate(base)]

    def redraw(c, f):
        key = jax.random.fold_in(jax.random.key(12345), c)
        eps = np.asarray(jax.random.normal(key, f["samples"].shape, np.float32))
        return f["mean"][:, None] + f["stddev"][:, None] * eps

    variants = {
        "embedder (baseline)": base,
        "embedder, another key": with_samples(redraw),
        "regenerated, f32 stddev": with_samples(lambda c, f: regenerate_samples(f["mean"], f["stddev"],
                                                                                model.num_samples)),
        "regenerated, f16 stddev": with_samples(lambda c, f: regenerate_samples(
            f["mean"], f["stddev"].astype(np.float16), model.num_samples)),
    }
    results = {}
    for name, entries in variants.items():
        t = time.perf_counter()
        # The queries keep the embedder's samples (query_keypoints forces their own features); entries vary.
        results[name] = protocol.cross_view_hit_at_k(method, views, ks=args.ks, index_features=entries,
                                                     query_keypoints=views.keypoints2d)
        print(f"# {name}: {time.perf_counter() - t:.0f} s", flush=True)

    def per_query(result):
        hits = np.concatenate([pair.hits for pair in result.pairs])  # (queries over all pairs, len(ks))
        first = np.concatenate([pair.first_error for pair in result.pairs])
        return hits, first

    ks = args.ks
    for against in ("embedder (baseline)", "embedder, another key"):
        base_hits, base_first = per_query(results[against])
        header = (f"{'entries samples':<26} " + " ".join(f"{f'Hit@{k}':>7}" for k in ks) + "   "
                  + " ".join(f"{f'd@{k} (SE)':>14}" for k in ks) + f" {'same top-1':>10}")
        print(f"\n## cross-view Hit@k (%), {len(base_hits)} queries over {len(results[against].pairs)} camera pairs; "
              f"d = change against {against!r} (paired SE over queries); same top-1 = share of queries whose first "
              "hit has its NP-MPJPE")
        print(header)
        print("-" * len(header))
        for name, result in results.items():
            hits, first = per_query(result)
            diff = hits.astype(float) - base_hits
            se = diff.std(axis=0, ddof=1) / np.sqrt(len(diff))
            print(f"{name:<26} " + " ".join(f"{100 * v:>7.2f}" for v in hits.mean(axis=0)) + "   "
                  + " ".join(f"{100 * d:>+7.2f} ({100 * e:.2f})" for d, e in zip(diff.mean(axis=0), se))
                  + f" {np.mean(first == base_first):>10.3f}", flush=True)
    print(f"# total {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
