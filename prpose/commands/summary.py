"""`prpose summary DATASET`: counts per split, subject, sequence and camera of a prepared dataset."""

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="prepared dataset directory (written by `prpose prep ...`)")


def main(args) -> int:
    from prpose.dataset import load_dataset

    print(load_dataset(args.dataset).summary())
    return 0
