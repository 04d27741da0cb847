"""``prpose train`` (and ``python train.py``): flags only; the training loop is ``prpose.training.train_and_evaluate``."""

from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="preset: paper, cpu, h36m (cpu tuned for a fixed camera rig with real detections) "
                             "or tiny, or a config.json file (default: cpu; with --resume, the run's own config.json)")
    parser.add_argument("--data", required=True, help="prepared dataset directory (prpose prep ...)")
    parser.add_argument("--out", required=True, help="run directory: config.json, checkpoints/, metrics.jsonl")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides, e.g. train.batch_size=64 model.width=256 loss.mining=hardest")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest intact checkpoint in --out (a damaged newer one is named, "
                             "moved aside to <step>.damaged and skipped); refused, with nothing written, if the "
                             "model or optimizer settings differ from the run's; with no checkpoint yet, a new "
                             "run starts (and says so), so launch scripts can always pass --resume")
    parser.add_argument("--distributed", action="store_true",
                        help="multi-process data parallel: call jax.distributed.initialize() first (every process "
                             "runs the same command with the same --out; only process 0 writes and prints; CPU "
                             "processes use gloo collectives). Without the three flags below, JAX detects the "
                             "cluster (Slurm, Cloud TPU, ...) or reads JAX_COORDINATOR_ADDRESS")
    parser.add_argument("--coordinator", metavar="HOST:PORT", help="with --distributed: process 0's address")
    parser.add_argument("--num-processes", type=int, metavar="N", help="with --distributed: number of processes")
    parser.add_argument("--process-id", type=int, metavar="I", help="with --distributed: this process, 0 .. N-1")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--fast-compile", action="store_true",
                        help="compile the step with XLA backend optimisation off: half the compile time, "
                             "slower steps (tests and smoke runs)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def main(args) -> int:
    import pathlib

    from prpose.config import TrainConfig, from_overrides, load_config
    from prpose.errors import PrposeError

    if args.distributed:
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes; other backends ignore it
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    elif (args.coordinator, args.num_processes, args.process_id) != (None, None, None):
        raise PrposeError("--coordinator, --num-processes and --process-id need --distributed")
    if args.config is None:
        saved = pathlib.Path(args.out) / "config.json"
        base = load_config(saved) if args.resume and saved.is_file() else "cpu"
    elif args.config.endswith(".json"):
        base = load_config(args.config)
    else:
        base = args.config
    config: TrainConfig = from_overrides(base, args.set)
    if args.print_config:
        print(config.to_json())
        return 0
    from prpose.training import train_and_evaluate

    options = {"xla_backend_optimization_level": 0} if args.fast_compile else None
    last = train_and_evaluate(config, args.data, args.out, resume=args.resume, progress=not args.no_progress,
                              compiler_options=options)
    import jax

    if jax.process_index() != 0:
        return 0  # process 0 reports
    summary = f"done: step {last.get('step')}"
    if "loss" in last:
        summary += f", loss {last['loss']:.4f}"
    if "eval" in last:
        summary += f", {last['eval']['split']} Hit@1 {100 * last['eval']['hit@1']:.1f}"
    print(summary + f"; run directory {args.out}")
    return 0

