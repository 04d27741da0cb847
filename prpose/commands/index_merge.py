"""`prpose index merge DIR`: join the shards written by `prpose index build --shard I/N` into one searchable index.

Checks that all N shards are present and come from one build (same model, match parameters, storage and metadata
fields), then writes DIR/shards.json; `prpose query --index DIR` and `prpose.index.load_index(DIR)` then search
every shard and merge the hits by match distance (`prpose.index.shards`). Only the shards' manifests are read.
"""

from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", help="the directory holding the shards (--out of `prpose index build --shard I/N`)")


def main(args) -> int:
    from prpose.index.shards import merge_shards

    merged = merge_shards(args.index)
    sizes = ", ".join(str(shard["count"]) for shard in merged["shards"][:8])
    more = ", ..." if merged["num_shards"] > 8 else ""
    print(f"merged {merged['num_shards']} shards ({merged['count']} views: {sizes}{more}) -> {args.index}")
    return 0
