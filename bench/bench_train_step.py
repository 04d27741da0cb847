"""Benchmark the jitted training step: where its time goes, stage by stage, against a float32 matmul's rate.

    python bench/bench_train_step.py                                  # paper preset: width 1024, batch 256
    python bench/bench_train_step.py --preset cpu --data /work/data/mocap
    python bench/bench_train_step.py --preset cpu --data /work/data/mocap --against 736d1ce --rounds 9
    python bench/bench_train_step.py --width 512 1024 --batch 128 256 --threads 1

Breakdown: every stage of ``prpose.training.train_step`` is jitted on its own, on the shapes the step uses, and
timed in round-robin with the full step (so all rows share the machine's load): batch sampling + augmentation
(``augmented_views``), the embedder's forward + backward (the MLP with batch norm, ReLU, dropout and its RNG),
the same Dense layers alone (plain matmuls: what the MLP would cost with nothing else), the loss's forward +
backward given the embeddings (mining with its NP-MPJPE labels from the 3D poses, K samples, K x K match
distances), and the optimizer + EMA update. For reference (not part of the step since mining computes only
the pairs that decide, prpose.mining.SHORTLIST) the full (B, B) NP-MPJPE matrix (``pose_distance_matrix``). Each row shows the wall time and
the process CPU time (median over rounds), XLA's FLOP count of the stage (``compiled.cost_analysis()``) and
its rate. "full - sum" is what jitting the step as one program gains (fusion) or loses.

The machine is shared: wall times move with the load, CPU time much less. ``--threads 1`` runs XLA on one
thread (set before JAX starts): the CPU times are then the work itself, the most stable breakdown under load.
The matmul reference ((N x N) @ (N x N) float32, 2 N^3 FLOPs) is timed in the same process and rounds.

MLP FLOPs counted: forward per embedded pose 2 * (in * W + 2 * blocks * W^2 + W * 2D) (input layer, two Dense
per residual block, mean and stddev heads; in = 26 or 39), two poses per example, forward + backward ~= 3 x
forward. "MLP % of matmul" = that count / the embedder stage's time / the matmul rate.

``--against REF`` measures the steps/s of the step at git revision REF (``git archive`` into a temporary
directory) and of this checkout in two worker processes that take turns (rounds alternate who goes first):
the old/new ratio comes from one run under one load.

Measured 2026-11-30 on the shared 2-core machine (load 10-25: wall times there are not comparable, so CPU ms per
step with --threads 1; --data /work/data/mocap), main before this work (1f5224d) -> after:
  paper (width 1024, batch 256): mining labels (B, B) 30.4 -> 0 (now inside the loss: 9.9 -> 19.2), embedder
  fwd+bwd 186.7 -> 158.9 (without dropout 147.8 / 150.8; Dense layers alone 138.9 / 141.8), optimizer + EMA
  11.1 -> 10.5, full step 245.6 -> 223.7; MLP part 75% -> 94% of the matmul rate (Dense layers alone 101-105%).
  The full step exceeds the sum of its stages by ~34 ms there (7 ms before), not explained: the shortlist did not
  fall back (0 undecided rows in 20 probes over 200 paper-preset steps), and the same step mining on the full
  matrix measured 217 vs 200 ms CPU per step (5 interleaved rounds).
  cpu (width 512, batch 128, visible-joint labels): labels 27.7 -> 0, loss 4.7 -> 8.7, embedder 23.4 -> 23.6,
  full step 61.3 -> 37.7 (MLP part 78% of matmul). --against 1f5224d: 1.95x steps/s by wall time (17.9 vs 9.2
  steps/s), 1.77x by CPU time (default threads: 2.13x wall, 1.69x CPU). Quality: the cpu preset trained 3,000 steps
  on /work/data/mocap before (736d1ce) and with the mining changes gave bit-identical weights (fingerprint
  2edf5f4c0648-478973f2320b; test split every 10th frame, bench_robustness.py clean Hit@1 82.9, Hit@10 97.6 both);
  everything (+ the 16-bit dropout), 3,000 steps: Hit@1 83.2, Hit@10 98.0.

Without --data a small synthetic dataset is generated in a temporary directory (the step's cost does not
depend on the data's size: it samples B frames from device arrays).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _set_threads(threads: int) -> None:
    """Before JAX starts: run XLA's CPU work on ``threads`` threads (1 = single-threaded Eigen)."""
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()


def mlp_forward_flops(model_config) -> int:
    w, blocks, d, inputs = model_config.width, model_config.num_blocks, model_config.embedding_dim, model_config.input_dim
    return 2 * (inputs * w + 2 * blocks * w * w + w * 2 * d)


def make_config(args, width=None, batch=None):
    from prpose.config import from_overrides

    overrides = list(args.set)
    overrides += [f"model.width={width}"] if width else []
    overrides += [f"train.batch_size={batch}"] if batch else []
    return from_overrides(args.preset, overrides)


def load_arrays(data, config, tmp):
    from prpose.pairs import load_train_arrays

    if data is None:
        from prpose.data_prep import synthetic

        data = os.path.join(tmp, "synthetic")
        synthetic.main(argparse.Namespace(out=data, sequences=20, frames=50, seed=0, rig="h36m", cameras=4,
                                          overwrite=False))
    return load_train_arrays(data, "train", profile=config.model.input_profile,
                             detections=config.augment.detection_probability > 0)


def step_function(config):
    """(jitted train step, state, ema) as prpose.training runs it (state and ema donated)."""
    import functools

    import jax

    from prpose.training import create_train_state, make_optimizer, train_step

    tx = make_optimizer(config)
    graphdef, _, state, ema = create_train_state(config, tx)
    step = jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx, config=config), donate_argnums=(0, 1))
    return step, state, ema, graphdef, tx


def stages(config, arrays):
    """Ordered {name: (jitted fn, args)}: the step's stages, each on the shapes the step uses."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from prpose.losses import pr_vipe_loss
    from prpose.mining import pose_distance_matrix
    from prpose.training import augmented_views, ema_decay_at

    step, state, ema, graphdef, tx = step_function(config)
    # The full step donates state and ema: the stages work on copies.
    stage_state, stage_ema = jax.tree.map(jnp.copy, (state, ema))
    key = jax.random.key(1)
    keys = tuple(jax.random.split(key, 5))
    views_fn = jax.jit(lambda keys: augmented_views(list(keys), arrays, config))
    views = views_fn(keys)
    mask = views.anchor_visible3d if config.loss.labels_visible_only else None
    labels_fn = jax.jit(pose_distance_matrix)
    inputs, visible = views.inputs(), views.visible

    def embedder(params, batch_stats, rng_state, dropout):
        def loss(params):
            model = nnx.merge(graphdef, params, *jax.tree.map(lambda x: x, (batch_stats, rng_state)))
            if not dropout:
                model.set_attributes(deterministic=True, raise_if_not_found=False)
            mean, stddev = model(inputs, visible)
            return jnp.sum(mean * 0.5) + jnp.sum(stddev * 0.25)  # any cotangent: the backward pass is the same
        return jax.grad(loss)(params)

    b, d, w = config.batch_size, config.model.embedding_dim, config.model.width
    dims = [config.model.input_dim] + [w] * (1 + 2 * config.model.num_blocks)
    weights = [jnp.full((i, o), 0.01, jnp.float32) for i, o in zip(dims[:-1], dims[1:])]
    weights.append(jnp.full((w, 2 * d), 0.01, jnp.float32))
    x0 = jnp.ones((2 * b, dims[0]), jnp.float32)

    def dense_only(weights, x):
        def loss(weights):
            h = x
            for m in weights[:-1]:
                h = jax.nn.relu(h @ m)
            return jnp.sum(h @ weights[-1])
        return jax.grad(loss)(weights)

    mean = jax.random.normal(key, (2 * b, d))
    stddev = jnp.full((2 * b, d), 0.3)

    def loss_stage(mean, stddev, a, bias, key):
        def loss(mean, stddev, a, bias):  # as prpose.objectives.embedding_loss calls it
            total, _ = pr_vipe_loss(mean[:b], stddev[:b], mean[b:], stddev[b:], a, bias, key, config.loss,
                                    config.model.num_samples, poses3d=views.poses3d, joint_mask=mask)
            return total
        return jax.grad(loss, argnums=(0, 1, 2, 3))(mean, stddev, a, bias)

    def update(grads, opt_state, params, ema_params, count):
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        decay = ema_decay_at(config.ema_decay, count)
        return params, opt_state, jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)

    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), stage_state.params)
    out = {
        "batch + augmentation": (views_fn, (keys,)),
        "embedder fwd+bwd (MLP part)": (jax.jit(lambda *a: embedder(*a, True)),
                                        (stage_state.params, stage_state.batch_stats, stage_state.rng_state)),
        "  same without dropout": (jax.jit(lambda *a: embedder(*a, False)),
                                   (stage_state.params, stage_state.batch_stats, stage_state.rng_state)),
        "  its Dense layers alone": (jax.jit(dense_only), (weights, x0)),
        "loss fwd+bwd (mining, K x K)": (jax.jit(loss_stage), (mean, stddev, jnp.float32(1.0), jnp.float32(0.0), key)),
        "  (B, B) NP-MPJPE, not in step": (labels_fn, (views.poses3d, mask)),
        "optimizer + EMA": (jax.jit(update), (grads, stage_state.opt_state, stage_state.params, stage_ema["params"], stage_state.step)),
    }
    return out, (step, state, ema)


SUMMED = ("batch + augmentation", "embedder fwd+bwd (MLP part)", "loss fwd+bwd (mining, K x K)", "optimizer + EMA")


def xla_flops(fn, args) -> float:
    try:
        cost = fn.lower(*args).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", float("nan")))
    except Exception:  # cost analysis is best effort (backend dependent)
        return float("nan")


def _timed(fn, calls: int):
    """(wall s, process CPU s) per call of fn() over ``calls`` calls."""
    import jax

    wall, cpu = time.perf_counter(), time.process_time()
    out = None
    for _ in range(calls):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def breakdown(config, arrays, rounds: int, calls: int, matmul_n: int):
    """Print the stage table of ``config`` and the MLP part's share of the matmul rate (by wall and CPU time)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    table, (step, state, ema) = stages(config, arrays)
    a = jax.random.normal(jax.random.key(0), (matmul_n, matmul_n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    table = {"matmul reference": (matmul, (a, a)), **table}
    flops = {name: xla_flops(fn, args) for name, (fn, args) in table.items()}
    flops["full step"] = xla_flops(step, (state, ema, arrays))
    for fn, args in table.values():
        jax.block_until_ready(fn(*args))  # compile
    box = {"state": state, "ema": ema}

    def run_step():
        box["state"], box["ema"], metrics = step(box["state"], box["ema"], arrays)
        return box["state"], metrics

    jax.block_until_ready(run_step())
    names = list(table) + ["full step"]
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for _ in range(rounds):
        for name in names:
            fn = run_step if name == "full step" else (lambda f=table[name][0], x=table[name][1]: f(*x))
            w, c = _timed(fn, 1 if name == "matmul reference" else calls)
            wall[name].append(w)
            cpu[name].append(c)
    med = {n: float(np.median(wall[n])) for n in names}
    med_cpu = {n: float(np.median(cpu[n])) for n in names}
    mlp_flops = 3 * 2 * config.batch_size * mlp_forward_flops(config.model)
    print(f"\nwidth {config.model.width}, blocks {config.model.num_blocks}, batch {config.batch_size}, "
          f"K {config.model.num_samples}, norm {config.model.norm}, dropout {config.model.dropout}, "
          f"labels_visible_only {config.loss.labels_visible_only}, optimizer {config.optimizer}")
    print(f"{'stage':<32} {'wall ms':>8} {'CPU ms':>8} {'% step':>7} {'XLA GFLOP':>10} {'GFLOP/s':>8}")
    summed = sum(med[n] for n in SUMMED)
    for name in names:
        gf = flops.get(name, float("nan")) / 1e9
        share = f"{100 * med[name] / med['full step']:6.0f}%" if name != "matmul reference" else ""
        print(f"{name:<32} {1e3 * med[name]:>8.2f} {1e3 * med_cpu[name]:>8.2f} {share:>7} {gf:>10.3f} "
              f"{gf / med[name]:>8.1f}")
    print(f"{'sum of the 4 stages':<32} {1e3 * summed:>8.2f} {1e3 * sum(med_cpu[n] for n in SUMMED):>8.2f}")
    print(f"{'full - sum (fusion, dispatch)':<32} {1e3 * (med['full step'] - summed):>8.2f}")
    for label, times in (("wall", med), ("CPU", med_cpu)):
        peak = 2 * matmul_n ** 3 / times["matmul reference"] / 1e9
        mlp = mlp_flops / times["embedder fwd+bwd (MLP part)"] / 1e9
        dense = mlp_flops / times["  its Dense layers alone"] / 1e9
        print(f"by {label} time: matmul {peak:.1f} GFLOP/s; MLP part ({mlp_flops / 1e9:.2f} GFLOP counted) "
              f"{mlp:.1f} GFLOP/s = {100 * mlp / peak:.0f}% of matmul (Dense layers alone {100 * dense / peak:.0f}%); "
              f"whole step {100 * mlp_flops / times['full step'] / 1e9 / peak:.0f}%, {1 / times['full step']:.1f} "
              f"steps/s, {config.batch_size / times['full step']:.0f} examples/s")


# --- old vs new, interleaved -----------------------------------------------------------------------------------

def worker(args) -> int:
    """Serve timings of the train step of the prpose at args.worker: one line per request on stdin."""
    sys.path.insert(0, args.worker)
    import jax

    import prpose

    config = make_config(args, args.width[0] if args.width else None, args.batch[0] if args.batch else None)
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory() as tmp:  # stdout: replies only
        arrays, _ = load_arrays(args.data, config, tmp)
        step, state, ema, _, _ = step_function(config)
        state, ema, metrics = step(state, ema, arrays)
        jax.block_until_ready(metrics)
    print(f"ready {os.path.dirname(prpose.__file__)}", flush=True)
    for line in sys.stdin:
        calls = int(line)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            state, ema, metrics = step(state, ema, arrays)
        jax.block_until_ready((state, metrics))
        print(f"{(time.perf_counter() - wall) / calls} {(time.process_time() - cpu) / calls}", flush=True)
    return 0


def against(args, ref: str) -> None:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        old_src = os.path.join(tmp, "old")
        os.makedirs(old_src)
        archive = subprocess.run(["git", "-C", ROOT, "archive", ref], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", old_src], input=archive, check=True)
        common = [sys.executable, os.path.abspath(__file__), "--preset", args.preset, "--threads", str(args.threads)]
        common += ["--set", *args.set] if args.set else []
        common += ["--data", args.data] if args.data else []
        common += ["--width", str(args.width[0])] if args.width else []
        common += ["--batch", str(args.batch[0])] if args.batch else []
        procs = {}
        for name, src in (("old", old_src), ("new", ROOT)):
            procs[name] = subprocess.Popen(common + ["--worker", src], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           text=True, env=dict(os.environ, PYTHONPATH=src))
        for name, p in procs.items():
            line = p.stdout.readline().split()
            if not line or line[0] != "ready":
                for q in procs.values():
                    q.kill()
                raise SystemExit(f"bench_train_step: the {name} worker did not start (see its error above)")
            print(f"{name}: {ref if name == 'old' else 'this checkout'} ({line[1]})")
        times = {name: [] for name in procs}
        for r in range(args.rounds):
            for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
                procs[name].stdin.write(f"{args.calls}\n")
                procs[name].stdin.flush()
                times[name].append(tuple(map(float, procs[name].stdout.readline().split())))
        for p in procs.values():
            p.stdin.close()
            p.wait()
    med = {n: np.median(np.array(t), axis=0) for n, t in times.items()}
    for name in ("old", "new"):
        print(f"{name}: {1e3 * med[name][0]:.2f} ms/step wall ({1 / med[name][0]:.1f} steps/s), "
              f"{1e3 * med[name][1]:.2f} ms/step CPU")
    ratios = np.array([o[0] / n[0] for o, n in zip(times["old"], times["new"])])
    print(f"new/old steps/s: {med['old'][0] / med['new'][0]:.2f}x wall (per round {ratios.min():.2f}-"
          f"{ratios.max():.2f}), {med['old'][1] / med['new'][1]:.2f}x CPU time; {args.rounds} rounds of "
          f"{args.calls} steps")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", help="config preset (paper: width 1024, batch 256; cpu)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--width", type=int, nargs="+", default=None, help="model widths (default: the preset's)")
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default: the preset's)")
    parser.add_argument("--rounds", type=int, default=7, help="round-robin timing rounds (median)")
    parser.add_argument("--calls", type=int, default=10, help="calls per stage per round")
    parser.add_argument("--matmul", type=int, default=2048, help="N of the reference N x N matmul")
    parser.add_argument("--threads", type=int, default=0, help="1: single-threaded XLA (stable CPU times)")
    parser.add_argument("--data", default=None, help="prepared dataset (default: small synthetic, generated)")
    parser.add_argument("--against", default=None, metavar="GIT_REF",
                        help="also time the step of this git revision vs this checkout, interleaved")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _set_threads(args.threads)
    if args.worker:
        return worker(args)
    sys.path.insert(0, ROOT)
    import jax

    print(f"devices: {jax.devices()} ({os.cpu_count()} CPUs visible, XLA threads: "
          f"{'1' if args.threads == 1 else 'default'}); load: {os.getloadavg()[0]:.1f} (1 min)")
    with tempfile.TemporaryDirectory() as tmp:
        arrays, report = load_arrays(args.data, make_config(args), tmp)
    print(f"data: {report.summary()}")
    for width in args.width or [None]:
        for batch in args.batch or [None]:
            breakdown(make_config(args, width, batch), arrays, args.rounds, args.calls, args.matmul)
    if args.against:
        print(f"\nsteps/s: {args.against} vs this checkout (two worker processes taking turns)")
        against(args, args.against)
    print(f"load after: {os.getloadavg()[0]:.1f} (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
