"""Train a Pr-VIPE model: ``python train.py --config cpu --data DIR --out RUN [--set k=v ...] [--resume]``.

Also ``prpose train`` (same flags). Only parses flags; the loop is ``prpose.training.train_and_evaluate``.
Examples::

    prpose prep synthetic --out prpose-data/synthetic
    python train.py --config tiny --data prpose-data/synthetic --out runs/tiny
    python train.py --config cpu --data /tmp/mocap_h36m --out runs/cpu --set train.steps=5000 model.width=256
    python train.py --config cpu --data /tmp/mocap_h36m --out runs/cpu --resume     # after an interruption
"""

import sys

from prpose.cli import run_script
from prpose.commands.train import configure_parser, main

if __name__ == "__main__":  # errors, as for `prpose train`: one line and exit status 2 (prpose.errors)
    sys.exit(run_script("prpose train", configure_parser, main))
