"""`prpose show DATASET --frame I --out PNG`: draw one prepared frame in every camera (and in 3D)."""

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="prepared dataset directory")
    parser.add_argument("--frame", type=int, default=0, help="row of the dataset to draw (default: %(default)s)")
    parser.add_argument("--out", default="frame.png", help="PNG file to write (default: %(default)s)")


def main(args) -> int:
    from prpose.dataset import load_dataset
    from prpose.errors import check_output_image
    from prpose.plotting import plot_dataset_frame

    out = check_output_image(args.out, "--out")
    dataset = load_dataset(args.dataset)
    plot_dataset_frame(dataset, args.frame, out)
    print(f"wrote {out}")
    return 0
