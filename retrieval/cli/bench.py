"""`retrieval bench ingest|index|lexical|writes|query|live|defaults|ray`: speed against a baseline.

Every figure is a ratio or a bound measured side by side on this machine, never compared
with numbers from elsewhere. Each benchmark prints a Markdown table (or JSON with --json):

- ingest: the BBC corpus indexed end to end into a temporary collection, against plain
  `SentenceTransformer.encode` on the same passage texts.
- index: a large synthetic collection (real passage vectors plus noise), its approximate
  index against exact search: latency, recall@10, bytes per vector, time to open.
- lexical: the in-memory BM25 against SQLite FTS5, same answers.
- writes: the bytes one `retrieval index` of one article reads and writes, at two
  collection sizes: a write should cost what it changes.
- query: the service under load from a second process, against a naive endpoint.
- live: two services on one collection under search load while articles are added and
  deleted over HTTP and by the CLI: exactness, freshness, latency, memory, write cost.

The engine's benchmarks live in retrieval/bench/, the service's in service/bench/ (they
drive the service and FastAPI, which the library never imports) and plug in through the
`retrieval.benchmarks` entry point group.
"""

from __future__ import annotations

import argparse
from typing import Any

from retrieval.cli.plugins import load_registrars


def register(commands: Any) -> None:
    """Adds `bench` and its benchmarks to the `retrieval` command."""
    from retrieval.bench.index import add_index_parser
    from retrieval.bench.ingest import add_ingest_parser
    from retrieval.bench.lexical import add_lexical_parser
    from retrieval.bench.one_shot import add_writes_parser

    parser = commands.add_parser(
        "bench", help="measure ingest, index and query speed against baselines",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    benches = parser.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    add_ingest_parser(benches)
    add_index_parser(benches)
    add_lexical_parser(benches)
    add_writes_parser(benches)
    # Benchmarks registered by other modules as entry points (the service's `query`):
    # they drive the HTTP service, which this library must not import.
    for add_parser in load_registrars("retrieval.benchmarks"):
        add_parser(benches)
