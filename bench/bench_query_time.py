"""Where the time of one `prpose query` goes: a fresh process per measurement, wall and CPU seconds per phase.

    python bench/bench_query_time.py [--input examples/cmu_detections_coco17.json] [--repeat 3]

Phases, each timed in a new Python process (imports are part of the cost, as on a fresh machine):
  * numpy path (what `prpose query` does for a few poses): import prpose + read the JSON, load the packaged model
    (checks SHA-256 and fingerprint), embed (NumPy forward, no JAX), load the library + build its index
    (regenerated samples, FAISS), search, and the 2D/3D picture (matplotlib);
  * jax path (before this change: every call compiled the model): import JAX/Flax, build the model state
    (jitted init), the first embed call (jit compile), the rest as above.
Then the whole command, `prpose query --input FILE` with and without `--plot`, as wall time of a subprocess.
CPU seconds (user + sys) are what an idle 2-core machine would wait; wall seconds here include other load.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent

PHASES = r'''
import json, sys, time, resource
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
out = {}
def mark(name, t0, c0):
    out[name] = (time.perf_counter() - t0, cpu() - c0)
    return time.perf_counter(), cpu()
t, c = time.perf_counter(), cpu()
import numpy as np
from prpose.keypoint_io import read_keypoints
poses = read_keypoints(sys.argv[1])
t, c = mark("import + read input", t, c)
import prpose.inference as inf
if sys.argv[2] == "jax":
    inf.NUMPY_MAX_ROWS = 0
    import jax, flax.nnx
    t, c = mark("import jax + flax", t, c)
model = inf.load_model()
if sys.argv[2] == "jax":
    model._jax_model()
t, c = mark("load model", t, c)
emb = model.embed(poses.keypoints, profile=poses.profile, scores=poses.scores)
t, c = mark("embed (first call)", t, c)
from prpose.commands.query import _packaged_library
_, library = _packaged_library(None)
library.index
t, c = mark("load library + index", t, c)
hits = library.search(emb.mean, emb.samples, 10, fingerprint=model.fingerprint)
t, c = mark("search", t, c)
from prpose.commands.query import _plot
points, visible, cams = library.views(hits.ids.clip(min=0))
hits.metadata["keypoints2d"] = points.reshape(*hits.ids.shape, 17, 2)
hits.metadata["visible"] = visible.reshape(*hits.ids.shape, 17)
_plot("/tmp/bench_query_time.png", poses, hits, 10, None, cams.reshape(*hits.ids.shape, 3))
t, c = mark("picture (--plot)", t, c)
out["jax imported"] = "jax" in sys.modules
print(json.dumps(out))
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(REPO / "examples" / "cmu_detections_coco17.json"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {open('/proc/loadavg').read().split()[:3]}")
    for path in ("numpy", "jax"):
        runs = [json.loads(subprocess.run([sys.executable, "-c", PHASES, args.input, path], capture_output=True,
                                          text=True, check=True, cwd=REPO).stdout) for _ in range(args.repeat)]
        print(f"\n{path} path (median of {args.repeat} fresh processes; jax imported: {runs[0]['jax imported']})")
        print(f"  {'phase':<24} {'wall s':>7} {'cpu s':>7}")
        for phase in [k for k in runs[0] if k != "jax imported"]:
            wall = sorted(r[phase][0] for r in runs)[len(runs) // 2]
            cpu = sorted(r[phase][1] for r in runs)[len(runs) // 2]
            print(f"  {phase:<24} {wall:7.2f} {cpu:7.2f}")
    print("\nthe whole command (fresh process, median):")
    for extra in ([], ["--plot", "/tmp/bench_query_time_cli.png"]):
        walls, cpus = [], []
        for _ in range(args.repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "prpose.cli", "query", "--input", args.input, *extra],
                           capture_output=True, check=True, cwd=REPO)
            walls.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        print(f"  prpose query --input FILE {' '.join(extra[:1]):<7} wall {sorted(walls)[len(walls) // 2]:5.2f} s"
              f"  cpu {sorted(cpus)[len(cpus) // 2]:5.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
