"""`prpose export`: a training run -> a weights-only model directory (config + EMA weights + fingerprint)."""

from __future__ import annotations

import argparse
import json


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="training run directory (written by `prpose train`)")
    parser.add_argument("--out", required=True, help="directory to write: config.json, weights.npz, model.json")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest complete one)")
    parser.add_argument("--name", default=None, help="model name recorded in model.json (default: --out's name)")
    parser.add_argument("--info", default=None, metavar="JSON",
                        help="provenance stored in model.json, a JSON object or a path to a .json file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def _read_info(text: str | None) -> dict:
    import pathlib

    from prpose.errors import PrposeError

    if text is None:
        return {}
    source = pathlib.Path(text).read_text() if text.endswith(".json") and pathlib.Path(text).is_file() else text
    try:
        info = json.loads(source)
    except ValueError as e:
        raise PrposeError(f"--info: not a JSON object or a readable .json file ({e})") from None
    if not isinstance(info, dict):
        raise PrposeError(f"--info: got a JSON {type(info).__name__}, expected an object")
    return info


def main(args) -> int:
    from prpose.export import ExportedModel, export_model

    out = export_model(args.model, args.out, step=args.step, name=args.name, info=_read_info(args.info),
                       overwrite=args.overwrite)
    stored = ExportedModel(out)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"exported {args.model} (step {stored.step}) -> {out}  [{size / 1e6:.2f} MB, fingerprint {stored.fingerprint}]")
    return 0
