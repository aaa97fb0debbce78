"""`retrieval bench writes`: what one `retrieval index` of one article costs, at two sizes.

A one-shot writer (`retrieval index` on an existing collection) should cost what it
changes: its article's rows, not a read of the whole collection. For each collection
size (BBC articles, indexed by one call as `retrieval index` does), one new article is
added
- in this process, as `retrieval index` adds it (open, write, checkpoint if due, close),
  with the model already loaded: the bytes read and written (/proc/self/io: rchar counts
  SQLite's page reads even from the page cache), and whether the index was loaded;
- by the `retrieval index` command itself in a subprocess: the bytes it wrote, from the
  kernel's accounting of the child (getrusage: blocks written, 512 bytes each).

The two sizes' numbers should stay of the same order: a write that grows with the
collection reads or rewrites what it did not change.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from retrieval.bench.common import BBC, print_result
from retrieval.bench.writes import bbc_articles, process_io, quantile, renamed
from retrieval.records import Article


def add_writes_parser(benches: Any) -> None:
    parser = benches.add_parser(
        "writes", help="bytes read and written by adding one article, at two sizes",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--corpus", type=Path, default=BBC,
                        help="articles (BEIR JSONL, BBC layout); default the BBC corpus")
    parser.add_argument("--sizes", default="300,900", metavar="N,M",
                        help="collection sizes in articles (default 300,900)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="one-article writes measured in process per size (default 3)")
    parser.add_argument("--dir", type=Path, default=None, metavar="DIR",
                        help="where to build the collection (default: a temporary directory)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run_writes_bench)


def run_writes_bench(args: argparse.Namespace) -> int:
    from retrieval.models.backends import make_embedder
    from retrieval.models.embedding import DEFAULT_MODEL

    sizes = sorted(int(size) for size in args.sizes.split(","))
    articles = bbc_articles(args.corpus)
    if sizes[-1] + args.repeats + 1 > len(articles):
        raise SystemExit(f"{args.corpus} holds {len(articles)} articles: too few for {sizes}")
    embedder = make_embedder(None, DEFAULT_MODEL)
    spare = articles[sizes[-1]:]  # never in the collection: the articles written
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        path, indexed = Path(scratch) / "collection", 0
        for size in sizes:
            index_call(path, embedder, articles[indexed:size])
            indexed = size
            rows.append(measure(path, embedder, spare, size, args.repeats, Path(scratch)))
    print_result({"corpus": str(args.corpus), "sizes": rows}, args.json, table)
    return 0


def index_call(path: Path, embedder: Any, articles: list[Article]) -> None:
    """Indexes articles as one `retrieval index` call does."""
    from retrieval.collection.collection import Collection

    with Collection.open(path, embedder, background=False) as collection:
        collection.add_articles(articles)
        collection.checkpoint_if_due()


def measure(
    path: Path, embedder: Any, spare: list[Article], size: int, repeats: int, scratch: Path
) -> dict[str, Any]:
    from retrieval.collection import checkpoint
    from retrieval.collection.collection import Collection

    read, written, loaded = [], [], []
    for i in range(repeats):
        cost = one_shot_write(path, embedder, renamed(spare[i], f"bw-{size}-{i}"))
        read.append(cost["rchar"])
        written.append(cost["write_bytes"])
        loaded.append(cost["index_loaded"])
    cli = cli_write(path, renamed(spare[repeats], f"bw-{size}-cli"), scratch)
    with Collection.open(path, embedder, background=False) as collection:
        counts = collection.store.counts()
        saved = checkpoint.saved_checkpoints(path, collection.store.history())
    return {
        "articles": counts["articles"], "passages": counts["passages"],
        "checkpoint_generation": saved[0][0] if saved else None,
        "median_rchar": quantile(read, 50), "median_write_bytes": quantile(written, 50),
        "index_loaded": any(loaded), "cli_write_bytes": cli,
        "rchar": read, "write_bytes": written,
    }


def one_shot_write(path: Path, embedder: Any, article: Article) -> dict[str, Any]:
    """One article added as `retrieval index` adds it, in this process: what it read and
    wrote, and whether it loaded the index."""
    from retrieval.collection.collection import Collection

    before = process_io()
    with Collection.open(path, embedder, background=False) as collection:
        collection.add_articles([article])
        collection.checkpoint_if_due()
        loaded = collection.index_loaded
    after = process_io()
    return {**{name: after[name] - before[name] for name in after}, "index_loaded": loaded}


def cli_write(path: Path, article: Article, scratch: Path) -> int:
    """Bytes written by `retrieval index ONE.jsonl` adding one article (the child's own
    count of blocks written, which the kernel keeps for each process)."""
    one = scratch / "one.jsonl"
    record = {"_id": article.id, "title": article.title, "text": article.text}
    one.write_text(json.dumps(record) + "\n", encoding="utf-8")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock
    subprocess.run(
        [sys.executable, "-m", "retrieval", "index", str(one), "--collection", str(path),
         "--quiet"],
        check=True, capture_output=True,
    )
    return (resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock - before) * 512


def table(result: dict[str, Any]) -> str:
    lines = [
        f"One article added to collections of {result['corpus']}:",
        "",
        "| articles | passages | checkpoint at | read (rchar) | written | index loaded "
        "| `retrieval index` wrote |",
        "|---:|---:|---:|---:|---:|:--:|---:|",
    ]
    for row in result["sizes"]:
        lines.append(
            f"| {row['articles']} | {row['passages']} | {row['checkpoint_generation'] or '-'} "
            f"| {row['median_rchar']:,.0f} B | {row['median_write_bytes']:,.0f} B "
            f"| {'yes' if row['index_loaded'] else 'no'} | {row['cli_write_bytes']:,} B |"
        )
    lines.append("")
    lines.append("read and written: median of the in-process writes (/proc/self/io).")
    return "\n".join(lines)
