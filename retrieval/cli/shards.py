"""`retrieval shards`: make, split, join and inspect a sharded collection
(retrieval/cluster/layout.py).

Registered as a `retrieval` subcommand through the entry point `retrieval.commands`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED = 0, 1


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "shards", help="make, split, join or inspect a sharded collection",
        description="A sharded collection is a directory of N ordinary collections "
        "(shard-000, shard-001, ...) and shards.json, which names them and the model and "
        "settings they share. Articles go to the shard that a hash of their id names. "
        "Serve one with `retrieval serve --shards DIR [--ray ADDRESS]`, index into one with "
        "`retrieval index PATH... --shards DIR [--ray ADDRESS]`.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="a new, empty sharded collection")
    create.add_argument("dir", type=Path, metavar="DIR")
    create.add_argument("--shards", type=int, required=True, metavar="N")
    create.add_argument("--like", type=Path, default=None, metavar="COLLECTION",
                        help="take the model and settings of this collection (default: the "
                        "default model and settings)")
    create.set_defaults(run=run_create)
    split = actions.add_parser("split", help="split one collection into N shards (no re-embedding)")
    split.add_argument("collection", type=Path, metavar="COLLECTION")
    split.add_argument("dir", type=Path, metavar="DIR", help="new directory for the shards")
    split.add_argument("--shards", type=int, required=True, metavar="N")
    split.set_defaults(run=run_split)
    join = actions.add_parser("join", help="copy every shard into one new collection")
    join.add_argument("dir", type=Path, metavar="DIR")
    join.add_argument("out", type=Path, metavar="OUT", help="new directory for the collection")
    join.set_defaults(run=run_join)
    info = actions.add_parser("info", help="what each shard holds; exits 1 if one disagrees")
    info.add_argument("dir", type=Path, metavar="DIR")
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=run_info)


def run_create(args: argparse.Namespace) -> int:
    from retrieval.cluster.layout import create_shards, read_collection_manifest

    if args.like is not None:
        manifest = read_collection_manifest(args.like)
    else:
        from retrieval.collection.index_policy import IndexPolicy
        from retrieval.collection.manifest import new_manifest
        from retrieval.ingestion.chunking import ChunkerSettings
        from retrieval.models.backends import make_embedder
        from retrieval.models.embedding import DEFAULT_MODEL

        embedder = make_embedder(None, DEFAULT_MODEL)
        manifest = new_manifest(embedder, ChunkerSettings(), IndexPolicy())
    layout = create_shards(args.dir, args.shards, manifest)
    print(f"created {layout.n} empty shards in {layout.path}")
    return EXIT_OK


def run_split(args: argparse.Namespace) -> int:
    from retrieval.cluster.layout import split

    layout = split(args.collection, args.dir, args.shards)
    print(f"split {args.collection} into {layout.n} shards in {layout.path}")
    return EXIT_OK


def run_join(args: argparse.Namespace) -> int:
    from retrieval.cluster.layout import join

    out = join(args.dir, args.out)
    print(f"joined the shards of {args.dir} into {out}")
    return EXIT_OK


def run_info(args: argparse.Namespace) -> int:
    from retrieval.cluster.layout import open_shard, read_layout

    layout = read_layout(args.dir)
    rows = []
    for index in range(layout.n):
        with open_shard(layout, index, background=False) as shard:
            info = shard.info()
        rows.append({"shard": layout.shards[index], "articles": info.articles,
                     "passages": info.passages, "generation": info.generation,
                     "in_agreement": info.in_agreement, "bytes_on_disk": info.bytes_on_disk})
    agree = all(row["in_agreement"] for row in rows)
    if args.json:
        print(json.dumps({"path": str(layout.path), "shards": rows,
                          "model": layout.collection["embedder"]["model"]}, indent=2))
        return EXIT_OK if agree else EXIT_FAILED
    print(f"sharded collection {layout.path}: {layout.n} shards, model "
          f"{layout.collection['embedder']['model']}")
    for row in rows:
        print(f"  {row['shard']}  {row['articles']:>8} articles  {row['passages']:>9} passages  "
              f"generation {row['generation']}  {'ok' if row['in_agreement'] else 'DISAGREES'}")
    return EXIT_OK if agree else EXIT_FAILED
