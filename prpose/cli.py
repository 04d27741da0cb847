"""The ``prpose`` command: one entry point, one subcommand per stage of the pipeline.

Each subcommand lives in its own module exposing ``configure_parser(parser)`` and ``main(args) -> int``;
this file only wires them together. Every command, and every script entry point (``python train.py``,
``python -m prpose.data_prep.synthetic``, ...) through :func:`run_script`, runs under ``prpose.errors.run_command``:
one line on stderr and exit status 2 for bad input or a failed file operation, 1 with a hint for an
unexpected error, quiet 141 when stdout is closed by the reader.
Only the module of the command being run is imported (``prpose query`` must not pay for JAX or the data
converters); ``prpose --help`` lists every command from the table below.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (command path, module, one-line help). Nested commands ("prep bvh") share a parent parser.
COMMANDS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("prep", "synthetic"), "prpose.data_prep.synthetic", "generate a synthetic prepared dataset (no downloads)"),
    (("prep", "bvh"), "prpose.data_prep.bvh", "convert BVH motion capture into a prepared dataset"),
    (("prep", "h36m"), "prpose.data_prep.h36m", "convert Human3.6M 3D poses (your own copy) into a prepared dataset"),
    (("summary",), "prpose.commands.summary", "print counts of a prepared dataset"),
    (("show",), "prpose.commands.show", "draw a prepared frame in every camera into a PNG"),
    (("train",), "prpose.commands.train", "train a Pr-VIPE model on a prepared dataset"),
    (("embed",), "prpose.commands.embed", "embed 2D keypoints with a trained model"),
    (("export",), "prpose.commands.export", "write a training run's weights as a small weights-only model"),
    (("index", "build"), "prpose.commands.index_build", "build a pose index from a prepared dataset"),
    (("index", "merge"), "prpose.commands.index_merge",
     "join the shards of `index build --shard I/N` into one index that queries search as one"),
    (("library", "build"), "prpose.commands.library_build",
     "build a compact pose library (distinct 3D poses + their embeddings) for `prpose query`"),
    (("query",), "prpose.commands.query", "find stored poses (an index, or the packaged pose library) that match 2D query poses in 3D"),
    (("eval",), "prpose.eval.cli", "cross-view retrieval evaluation (Hit@k) with baselines"),
    (("demo",), "prpose.commands.demo", "end to end on synthetic data: prepare, train, index, query, plot"),
)


def _not_built(module_name: str, error: ModuleNotFoundError):
    def configure_parser(parser: argparse.ArgumentParser) -> None:
        parser.description = f"(not available: {module_name} could not be imported: {error})"

    def main(args) -> int:
        print(f"prpose: this command is not available yet ({module_name}: {error})", file=sys.stderr)
        return 2

    return configure_parser, main


def _selected(argv: list[str] | None) -> tuple[str, ...] | None:
    """The command path named by ``argv`` (its leading non-option words), or None (build every command)."""
    if argv is None:
        return None
    words = []
    for token in argv:
        if token == "--debug":
            continue
        if token.startswith("-"):
            break
        words.append(token)
    for path, _, _ in COMMANDS:
        if tuple(words[: len(path)]) == path:
            return path
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser, or with ``argv`` one whose only fully configured command is the one ``argv`` names
    (the others are listed with their help text, their modules not imported)."""
    from prpose import __version__

    parser = argparse.ArgumentParser(
        prog="prpose",
        description="View-invariant probabilistic pose embeddings (Pr-VIPE) and 3D-similar pose retrieval.",
    )
    parser.add_argument("--version", action="version", version=f"prpose {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (also: environment variable PRPOSE_DEBUG=1)")
    root = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    selected = _selected(argv)
    for path, module_name, help_text in COMMANDS:
        if selected is not None and path != selected:
            configure, run = (lambda sub: None), None
        else:
            try:
                module = importlib.import_module(module_name)
                configure, run = module.configure_parser, module.main
            except ModuleNotFoundError as error:
                if error.name != module_name:
                    raise  # a dependency is missing: a real bug, not an unbuilt command
                configure, run = _not_built(module_name, error)
        if len(path) == 1:
            sub = root.add_parser(path[0], help=help_text, description=help_text)
        else:
            if path[0] not in groups:
                group_parser = root.add_parser(path[0], help=f"{path[0]} subcommands")
                groups[path[0]] = group_parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
            sub = groups[path[0]].add_parser(path[1], help=help_text, description=help_text)
        configure(sub)
        sub.set_defaults(_run=run, _name=" ".join(path))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    from prpose.errors import run_command

    return run_command(f"prpose {args._name}", args._run, args, debug=args.debug)


def run_script(name: str, configure_parser, command_main, argv: list[str] | None = None) -> int:
    """Entry point of a module run as a script, under the same error contract as ``prpose``.

    ``name`` is the command as the user knows it (``"prpose train"``), used for ``--help`` and messages.
    """
    from prpose.errors import run_command

    parser = argparse.ArgumentParser(prog=name)
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    configure_parser(parser)
    args = parser.parse_args(argv)
    return run_command(name, command_main, args, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
