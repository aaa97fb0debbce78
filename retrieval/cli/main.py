"""The `retrieval` command: index articles, search them, inspect a collection.

A thin argparse layer over the library; every subcommand is a small function.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from retrieval.cli.plugins import load_registrars
from retrieval.errors import RetrievalError
from retrieval.search.options import DEFAULTS, MODES, option_help

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Hits `retrieval search` prints by default: a terminal's worth (the library's is 10).
CLI_K = 5


def default_collection() -> Path:
    """Where a collection lives when --collection is not given.

    $RETRIEVAL_COLLECTION if set, else $XDG_DATA_HOME/retrieval/collection
    (~/.local/share/retrieval/collection).
    """
    if env := os.environ.get("RETRIEVAL_COLLECTION"):
        return Path(env)
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "retrieval" / "collection"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retrieval",
        description="Semantic passage retrieval over news articles: index them, then "
        "find the passages closest in meaning to a question.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_index_command(commands)
    add_search_command(commands)
    add_related_command(commands)
    add_info_command(commands)
    add_snapshot_command(commands)
    add_delete_command(commands)
    # Subcommands registered by other modules (serve, eval, bench) as entry points:
    # `service` registers `serve` this way, so this library never imports the service.
    for register in load_registrars("retrieval.commands"):
        register(commands)
    return parser


def add_collection_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--collection",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"collection directory (default: {default_collection()})",
    )


def add_index_command(commands: Any) -> None:
    parser = commands.add_parser(
        "index",
        help="add articles to a collection",
        description="Load articles from files and folders (.txt/.md in the seed format, "
        ".jsonl, BEIR corpus.jsonl, saved .html/.htm pages, .rss/.atom/.xml feeds), chunk, "
        "embed and store them. Unchanged articles are skipped; changed ones replace their "
        "passages.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    add_collection_option(parser)
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse the whole batch if any file or line is bad (default: skip and report)",
    )
    parser.add_argument("--model", default=None, help="model for a new collection (folder)")
    parser.add_argument(
        "--backend",
        choices=["auto", "torch", "openvino-int8", "openvino-fp32"],
        default=None,
        help="embedding backend for a new collection: auto (the default, or "
        "$RETRIEVAL_BACKEND: the fastest on this CPU of those that passed the quality guard, "
        "measured once per machine), torch (sentence-transformers fp32), openvino-int8 or "
        "openvino-fp32. An existing collection keeps the backend it was built with",
    )
    parser.add_argument(
        "--chunking",
        choices=["paragraph", "none"],
        default=None,
        help="for a new collection: paragraph (default) or none (one passage per article, "
        "truncated by the model: for comparing with published figures)",
    )
    parser.add_argument(
        "--index-spec",
        default=None,
        help='FAISS index for a new collection: "auto" (default: exact up to 20,000 passages, '
        'then IVF with lists for the size, over 8-bit codes), "Flat" (always exact), or a '
        'FAISS factory string such as "HNSW32,SQ8"',
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        metavar="N",
        help="articles committed together in one transaction (default 64)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--shards", type=Path, default=None, metavar="DIR",
        help="index into a sharded collection (retrieval shards create/split) instead: each "
        "article goes to the shard its id hashes to",
    )
    parser.add_argument(
        "--ray", default=None, metavar="ADDRESS",
        help="with --shards: chunk and embed on the Ray cluster at ADDRESS (host:port of its "
        "head, or auto) with Ray Data; each shard writes on its own node. Needs the ray extra",
    )
    parser.add_argument("--actors", type=int, default=1, metavar="N",
                        help="with --ray: embedding actors, each holding the model (default 1)")
    parser.add_argument("--actor-cpus", type=float, default=1.0, metavar="CPUS",
                        help="with --ray: CPUs each embedding actor reserves (default 1; the "
                        "model runs that many threads). Ray waits until a node has them free")
    parser.set_defaults(run=run_index)


def add_search_command(commands: Any) -> None:
    parser = commands.add_parser("search", help="find the passages closest to a query")
    parser.add_argument("query")
    add_collection_option(parser)
    # Flags named, defaulted and explained by retrieval.search.options.SearchOptions
    # (standard library only: cheap to import). One deliberate difference: a terminal's
    # worth of hits, 5, not 10 (tests/test_search_options.py).
    parser.add_argument("-k", type=int, default=CLI_K, help=f"hits to return (default {CLI_K})")
    parser.add_argument("--mode", choices=MODES, default=DEFAULTS.mode,
                        help=option_help("mode"))
    parser.add_argument(
        "--article",
        action="append",
        dest="article_ids",
        metavar="ID",
        help="only this article (repeatable)",
    )
    parser.add_argument(
        "--source",
        action="append",
        dest="sources",
        metavar="NAME",
        help="only this source (repeatable)",
    )
    parser.add_argument("--date-from", metavar="YYYY-MM-DD",
                        help="only articles of this date or later")
    parser.add_argument("--date-to", metavar="YYYY-MM-DD",
                        help="only articles of this date or earlier")
    parser.add_argument("--max-per-article", type=int, default=DEFAULTS.max_per_article,
                        metavar="N", help=option_help("max_per_article"))
    parser.add_argument("--offset", type=int, default=DEFAULTS.offset, metavar="N",
                        help=option_help("offset"))
    parser.add_argument("--min-score", type=float, default=DEFAULTS.min_score, metavar="S",
                        help=option_help("min_score"))
    parser.add_argument("--recency-half-life", type=float, metavar="DAYS",
                        default=DEFAULTS.recency_half_life_days, dest="recency_half_life_days",
                        help=option_help("recency_half_life_days"))
    parser.add_argument("--now", metavar="YYYY-MM-DD", default=DEFAULTS.now,
                        help=option_help("now"))
    parser.add_argument("--sort", choices=["score", "date"], default=DEFAULTS.sort,
                        help=option_help("sort"))
    parser.add_argument("--collapse", action=argparse.BooleanOptionalAction,
                        default=DEFAULTS.collapse, help=option_help("collapse"))
    parser.add_argument("--json", action="store_true", help="print hits as a JSON list")
    parser.set_defaults(run=run_search)


def add_related_command(commands: Any) -> None:
    parser = commands.add_parser(
        "related", help="the articles closest in meaning to a stored one",
        description="The articles closest to a stored article, from its passages' stored "
        "vectors (no model call); the article itself is left out.",
    )
    parser.add_argument("article_id", metavar="ID")
    add_collection_option(parser)
    parser.add_argument("-k", type=int, default=10, help="articles to return (default 10)")
    parser.add_argument("--json", action="store_true", help="print them as a JSON list")
    parser.set_defaults(run=run_related)


def add_info_command(commands: Any) -> None:
    parser = commands.add_parser(
        "info", help="what a collection holds; exits 1 if store and index disagree"
    )
    add_collection_option(parser)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--remeasure",
        action="store_true",
        help="measure the embedding backends again and cache the new automatic choice of new "
        "collections (one made while the machine was busy may be wrong); reads no collection",
    )
    parser.set_defaults(run=run_info)


def add_delete_command(commands: Any) -> None:
    parser = commands.add_parser(
        "delete",
        help="delete articles and their passages; exits 1 if an id is unknown",
        description="Delete articles (by id) and their passages from store and index. "
        "Every known id is deleted; an unknown one is reported and makes the exit status 1.",
    )
    parser.add_argument("article_ids", nargs="+", metavar="ID")
    add_collection_option(parser)
    parser.set_defaults(run=run_delete)


def add_snapshot_command(commands: Any) -> None:
    parser = commands.add_parser(
        "snapshot", help="copy a collection consistently while it serves and is written",
        description="Copy a collection into a new directory, consistent as of one committed "
        "generation, without stopping the services or writers using it (SQLite's online "
        "backup, and the index checkpoint of that generation if there is one). Open the copy "
        "like any collection: it answers as the original did at that generation.",
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="new directory for the copy")
    add_collection_option(parser)
    parser.set_defaults(run=run_snapshot)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


# -- subcommands -------------------------------------------------------------------------


def run_index(args: argparse.Namespace) -> int:
    from retrieval.collection.collection import Collection
    from retrieval.ingestion.chunking import ChunkerSettings
    from retrieval.ingestion.loaders import load_articles

    loaded = load_articles(args.paths)
    for error in loaded.errors:
        print(f"error: {error}", file=sys.stderr)
    if loaded.errors and args.strict:
        print(
            f"refused: {len(loaded.errors)} bad input(s) and --strict; nothing was indexed",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if args.shards is not None or args.ray is not None:
        return index_shards(args, loaded.articles, len(loaded.errors))
    chunker = ChunkerSettings(mode=args.chunking) if args.chunking else None
    embedder = None
    if args.model or args.backend:
        from retrieval.models.backends import make_embedder
        from retrieval.models.embedding import DEFAULT_MODEL

        embedder = make_embedder(args.backend, args.model or DEFAULT_MODEL)
    with Collection.open(
        collection_path(args), embedder, chunker=chunker, index_spec=args.index_spec,
        background=False,
    ) as collection:
        report = collection.add_articles(
            loaded.articles,
            progress=progress_bar(len(loaded.articles), quiet=args.quiet),
            batch_size=args.batch_size,
        )
        checkpoint_if_due(collection)
    print(
        f"indexed into {collection.path}: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged; {report.passages_added} passages added, "
        f"{report.passages_removed} removed; {len(loaded.errors)} skipped; "
        f"{report.seconds:.1f} s"
    )
    return EXIT_OK


def index_shards(args: argparse.Namespace, articles: list[Any], skipped: int) -> int:
    """`index --shards DIR`: through the router in this process, or on Ray with --ray."""
    if args.shards is None:
        return fail("--ray indexes into a sharded collection: give it with --shards DIR "
                    "(retrieval shards create DIR --shards N makes one)")
    if any(value is not None for value in (args.model, args.backend, args.chunking,
                                            args.index_spec)):
        return fail("a sharded collection's model and settings are fixed when it is made "
                    "(retrieval shards create --like COLLECTION): drop --model, --backend, "
                    "--chunking and --index-spec")
    if args.ray is not None:
        try:
            from retrieval.cluster.ray_index import index_on_ray
        except ImportError as error:
            return fail(f"--ray needs Ray: pip install 'retrieval[ray]' ({error})")
        report = index_on_ray(args.ray, str(args.shards), articles,
                              batch_size=args.batch_size, actors=args.actors,
                              actor_cpus=args.actor_cpus)
    else:
        from retrieval.cluster.router import open_local

        with open_local(args.shards, background=False) as sharded:
            report = sharded.add_articles(
                articles, progress=progress_bar(len(articles), quiet=args.quiet),
                batch_size=args.batch_size,
            )
    print(
        f"indexed into {args.shards}: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged; {report.passages_added} passages added, "
        f"{report.passages_removed} removed; {skipped} skipped; {report.seconds:.1f} s"
    )
    return EXIT_OK


def run_search(args: argparse.Namespace) -> int:
    from retrieval.collection.collection import Collection
    from retrieval.records import Filters
    from retrieval.search.retriever import Retriever

    filters = Filters(
        article_ids=tuple(args.article_ids) if args.article_ids else None,
        sources=tuple(args.sources) if args.sources else None,
        date_from=args.date_from,
        date_to=args.date_to,
    )
    with Collection.open(collection_path(args), create=False, background=False) as collection:
        hits = Retriever(collection).search(
            args.query,
            args.k,
            mode=args.mode,
            filters=filters,
            max_per_article=args.max_per_article,
            offset=args.offset,
            min_score=args.min_score,
            recency_half_life_days=args.recency_half_life_days,
            now=args.now,
            sort=args.sort,
            collapse=args.collapse,
        )
    if args.json:
        print(json.dumps([asdict(hit) for hit in hits], ensure_ascii=False, indent=2))
        return EXIT_OK
    if not hits:
        print("no passages match")
    for hit in hits:
        print(
            f"{hit.rank}. [{hit.score:.3f}] {hit.title} ({hit.article_id}, {hit.date or 'no date'})"
        )
        if hit.duplicates:
            print(f"   and {copies(hit.duplicates)}: {', '.join(hit.duplicate_ids)}")
        print(f"   {hit.text}\n")
    return EXIT_OK


def copies(n: int) -> str:
    return f"{n} cop{'y' if n == 1 else 'ies'}"


def run_related(args: argparse.Namespace) -> int:
    from retrieval.collection.collection import Collection
    from retrieval.search.retriever import Retriever

    with Collection.open(collection_path(args), create=False, background=False) as collection:
        related = Retriever(collection).related(args.article_id, args.k)
    if args.json:
        print(json.dumps([asdict(r) for r in related], ensure_ascii=False, indent=2))
        return EXIT_OK
    if not related:
        print("no other articles")
    for rank, r in enumerate(related, start=1):
        print(f"{rank}. [{r.score:.3f}] {r.title} ({r.article_id}, {r.date or 'no date'})")
    return EXIT_OK


def run_info(args: argparse.Namespace) -> int:
    from retrieval.collection.collection import Collection
    from retrieval.models.backends import describe_default, remeasure_default

    if args.remeasure:
        print(f"new collections    {remeasure_default()}")
        return EXIT_OK
    with Collection.open(collection_path(args), create=False, background=False) as collection:
        info = collection.info()
    if args.json:
        print(json.dumps({**asdict(info), "in_agreement": info.in_agreement}, indent=2))
    else:
        embedder = info.manifest["embedder"]
        print(f"collection         {info.path}")
        print(
            f"model              {embedder['model']} ({embedder['backend']}, "
            f"dim {embedder['dim']}, max {embedder['max_tokens']} tokens)"
        )
        print(f"chunking           {info.manifest['chunker']}")
        print(f"index              {info.manifest['index']['spec']}")
        print(f"articles           {info.articles}")
        print(f"passages           {info.passages} (longest {info.max_passage_tokens} tokens)")
        print(f"vectors in store   {info.vectors_in_store}")
        print(f"vectors in index   {info.vectors_in_index}")
        print(f"in agreement       {'yes' if info.in_agreement else 'NO'}")
        print(f"generation         {info.generation}")
        print(f"size on disk       {info.bytes_on_disk / 1e6:.1f} MB")
        print(f"new collections    {describe_default()}")
    return EXIT_OK if info.in_agreement else EXIT_FAILED


def run_delete(args: argparse.Namespace) -> int:
    from retrieval.collection.collection import Collection
    from retrieval.errors import NotFoundError

    unknown = 0
    with Collection.open(collection_path(args), create=False, background=False) as collection:
        for article_id in dict.fromkeys(args.article_ids):  # each id once, in order
            try:
                removed = collection.delete_article(article_id)
            except NotFoundError as error:
                print(f"error: {error}", file=sys.stderr)
                unknown += 1
                continue
            print(f"deleted {article_id}: {removed} passages")
    return EXIT_FAILED if unknown else EXIT_OK


def run_snapshot(args: argparse.Namespace) -> int:
    from retrieval.collection.snapshot import snapshot

    report = snapshot(collection_path(args), args.out)
    held = (
        f"the index checkpoint of generation {report.checkpoint_generation}"
        if report.checkpoint_generation is not None
        else "no index checkpoint (opening it replays the store)"
    )
    print(f"snapshot at generation {report.generation} in {report.path}, with {held}")
    return EXIT_OK


# -- helpers -----------------------------------------------------------------------------


def checkpoint_if_due(collection: Any) -> None:
    """Saves the index as of now when enough changed, so the next open need not replay it.

    Services on the collection would build it in the background too; doing it here
    spares them the work. Said on stderr, since it may take a while on a large collection.
    """
    announced = []

    def announce(reason: str) -> None:
        print(f"checkpoint: saving the index ({reason})", file=sys.stderr, flush=True)
        announced.append(reason)

    how = collection.checkpoint_if_due(announce)
    if announced:
        print(f"checkpoint: {how or 'left to the process already building one'}", file=sys.stderr)


def collection_path(args: argparse.Namespace) -> Path:
    return args.collection if args.collection is not None else default_collection()


def progress_bar(total: int, *, quiet: bool) -> Any:
    if quiet or total == 0:
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="article", desc="indexing")
    return bar.update


def main(argv: Sequence[str] | None = None) -> int:
    # Models load from folders on disk; never reach for a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # the model-loading bar
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except RetrievalError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE if isinstance(error, ValueError) else EXIT_FAILED
    except BrokenPipeError:
        # The reader stopped reading (`retrieval info | head`): nothing of ours failed.
        # Standard output goes nowhere from here, so the exit does not fail to flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
