"""Benchmark the jitted training step: examples/s and achieved FLOP/s vs a large float32 matmul.

    python bench/bench_train_step.py                       # paper width 1024, 2 blocks, batch 256, K 20
    python bench/bench_train_step.py --width 512 256 --batch 256 --steps 30
    python bench/bench_train_step.py --data /tmp/mocap_h36m --optimizer adagrad

What is counted (the MLP's dense layers only; the rest is reported as the gap to the matmul peak):
  forward matmul FLOPs per embedded pose = 2 * (in * W + 2 * blocks * W^2 + W * 2D)
  (input layer, two Dense per residual block, mean and stddev heads; in = 26 or 39),
  two poses per example (anchor and positive share the weights), and forward + backward ~= 3 x forward.
Not counted: batch norm, ReLU, the (B, B) NP-MPJPE for mining, camera augmentation, the K x K sample
distances, the optimizer update. The matmul reference is a (N x N) @ (N x N) float32 product (2 N^3 FLOPs),
timed in the same process right before the step.

Measured 2026-11-27 on the shared 2-core machine (other jobs running, load ~5; matmul 120 GFLOP/s, ~195 idle):
  width 1024 batch 256: 312 ms/step, 820 examples/s, 41.9 GFLOP/s in the MLP = 35% of the matmul;
  width 1024 batch 128: 114 ms/step, 1,120 examples/s (48%); width 256 batch 256: 79 ms, 3,233 ex/s;
  width 256 batch 128: 34 ms, 3,716 ex/s. The gap grows with B^2: the in-step (B, B) NP-MPJPE for mining
  (65,536 Procrustes fits at B = 256, ~80 ms alone) is the largest non-MLP cost.

Without --data a small synthetic dataset is generated in a temporary directory (the step's cost does not
depend on the data's size: it samples B frames from device arrays).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def mlp_forward_flops(model_config) -> int:
    w, blocks, d, inputs = model_config.width, model_config.num_blocks, model_config.embedding_dim, model_config.input_dim
    return 2 * (inputs * w + 2 * blocks * w * w + w * 2 * d)


def bench_step(config, arrays, steps: int, repeats: int = 3):
    """(compile seconds, best seconds per step over ``repeats`` timings of ``steps`` steps)."""
    import jax

    from prpose.training import create_train_state, make_optimizer, train_step

    tx = make_optimizer(config)
    graphdef, _, state, ema = create_train_state(config, tx)
    step = jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx, config=config), donate_argnums=(0, 1))
    t = time.perf_counter()
    state, ema, metrics = step(state, ema, arrays)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t
    for _ in range(3):  # warm-up
        state, ema, metrics = step(state, ema, arrays)
    jax.block_until_ready(metrics)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            state, ema, metrics = step(state, ema, arrays)
        jax.block_until_ready((state, metrics))
        best = min(best, (time.perf_counter() - t) / steps)
    return compile_s, best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, nargs="+", default=[1024])
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--batch", type=int, nargs="+", default=[256])
    parser.add_argument("--samples", type=int, default=20, help="K")
    parser.add_argument("--optimizer", default="adagrad", help="paper: adagrad (default)")
    parser.add_argument("--steps", type=int, default=20, help="steps per timing (best of 3)")
    parser.add_argument("--matmul", type=int, default=4096, help="N of the reference N x N matmul")
    parser.add_argument("--data", default=None, help="prepared dataset (default: small synthetic, generated)")
    args = parser.parse_args(argv)

    import jax

    from prpose.config import from_overrides
    from prpose.pairs import load_train_arrays

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from prpose.data_prep import synthetic

            data = os.path.join(tmp, "synthetic")
            synthetic.main(argparse.Namespace(out=data, sequences=20, frames=50, seed=0, rig="h36m", cameras=4,
                                              overwrite=False))
        arrays, report = load_train_arrays(data, "train")
    print(f"devices: {jax.devices()} ({os.cpu_count()} CPUs visible); data: {report.summary()}")
    peak = matmul_gflops(args.matmul)
    print(f"reference: {args.matmul}x{args.matmul} float32 matmul {peak:.1f} GFLOP/s")
    print(f"{'width':>6} {'batch':>6} {'compile s':>10} {'ms/step':>8} {'examples/s':>11} {'MLP GFLOP/s':>12} "
          f"{'of matmul':>10}")
    for width in args.width:
        for batch in args.batch:
            config = from_overrides("paper", [f"model.width={width}", f"model.num_blocks={args.blocks}",
                                              f"model.num_samples={args.samples}", f"train.batch_size={batch}",
                                              f"train.optimizer={args.optimizer}"])
            compile_s, per_step = bench_step(config, arrays, args.steps)
            flops = 3 * 2 * batch * mlp_forward_flops(config.model)
            gflops = flops / per_step / 1e9
            print(f"{width:>6} {batch:>6} {compile_s:>10.1f} {1e3 * per_step:>8.1f} {batch / per_step:>11.0f} "
                  f"{gflops:>12.1f} {100 * gflops / peak:>9.0f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
