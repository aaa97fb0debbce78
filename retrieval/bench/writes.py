"""Collections for the live benchmark, and what one small write costs at each size.

The live benchmark (`retrieval bench live`, service/bench/live.py) drives the service,
which this library never imports; the parts that need only the library live here:

- `bbc_articles`: the BBC corpus as Articles (source = the BBC category), in a seeded
  random order, so that the collection, the HTTP writer and the CLI writer each take
  their own slice of one list;
- `build_collection`: `size` passages whose vectors derive from real BBC passage vectors
  (retrieval/bench/index.py's `synthesize` and `write_collection`), the index derived from the store
  as a real open does, then a few hundred real BBC articles indexed the normal way;
- `write_cost`: batches of real articles added in process with `Collection.add_articles`,
  each timed, with the bytes this process wrote (/proc/self/io) and the growth of the
  collection's files. A write should cost what it changes, not what the collection holds.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.bench.common import BBC
from retrieval.bench.index import real_vectors, synthesize, write_collection
from retrieval.records import Article

NOISE, MIX = 0.02, 0.5  # bench index's defaults: distinct vectors, real neighbourhoods


def bbc_articles(path: Path = BBC, *, seed: int = 0) -> list[Article]:
    """Every BBC article, its category as `source`, shuffled with `seed`."""
    with open(path, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    articles = [
        Article(id=r["_id"], title=r.get("title", ""), text=r["text"], source=r.get("category"))
        for r in records
    ]
    random.Random(seed).shuffle(articles)
    return articles


def renamed(article: Article, new_id: str) -> Article:
    """The same article under a new id (a story the collection has not seen)."""
    return dataclasses.replace(article, id=new_id)


def build_collection(
    path: Path, embedder: Any, size: int, *, base: int, real: list[Article], reuse: bool
) -> float:
    """A collection of `size` synthetic passages plus the `real` articles at `path`.

    With `reuse`, a collection already there is kept as it is. A directory there that is
    not a collection is refused rather than replaced.

    Returns:
        Seconds spent building (0.0 when reused).
    """
    from retrieval.collection.collection import Collection
    from retrieval.collection.manifest import MANIFEST

    if path.exists():
        if reuse and (path / MANIFEST).exists():
            return 0.0
        if not (path / MANIFEST).exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not a collection: not replacing it")
        shutil.rmtree(path)
    started = time.perf_counter()
    vectors, _ = real_vectors(embedder, base, 300)
    write_collection(path, embedder, synthesize(vectors, size, NOISE, MIX), "auto")
    with Collection.open(path, embedder, background=False) as collection:
        if real:
            collection.add_articles(real)
        collection.checkpoint(force=True)  # as `retrieval index` leaves a large collection
    return time.perf_counter() - started


def write_cost(
    path: Path, embedder: Any, articles: list[Article], *, batches: int, per_batch: int,
    run: str,
) -> dict[str, Any]:
    """Adds `batches` batches of `per_batch` articles (new ids) and measures each one.

    Returns:
        seconds, write_bytes (from /proc/self/io; wchar where write_bytes stays 0, as on
        file systems that do not count it) and dir_growth_bytes per batch: their median
        and p90, with the raw lists.
    """
    from retrieval.collection.collection import Collection

    seconds, written, wchars, growth = [], [], [], []
    # No background checkpoints: this measures what a write itself costs. The checkpoint
    # it eventually leads to is measured below and spread over the writes that cause one.
    with Collection.open(path, embedder, background=False) as collection:
        for b in range(batches):
            batch = [
                renamed(articles[(b * per_batch + i) % len(articles)], f"wc-{run}-{b}-{i}")
                for i in range(per_batch)
            ]
            io_before, size_before = process_io(), dir_bytes(path)
            started = time.perf_counter()
            collection.add_articles(batch)
            seconds.append(time.perf_counter() - started)
            io_after = process_io()
            written.append(io_after["write_bytes"] - io_before["write_bytes"])
            wchars.append(io_after["wchar"] - io_before["wchar"])
            growth.append(dir_bytes(path) - size_before)
        info = collection.info()
        passages, added = info.passages, collection.index.counts()["delta"]
        io_before, started = process_io(), time.perf_counter()
        collection.checkpoint(force=True)
        checkpoint_s = time.perf_counter() - started
        checkpoint_bytes = process_io()["write_bytes"] - io_before["write_bytes"]
        per_checkpoint = collection.policy.delta_max
    source = "write_bytes" if any(written) else "wchar"
    counted = written if any(written) else wchars
    return {
        "passages": passages, "batches": batches,
        "articles_per_batch": per_batch, "bytes_source": source,
        "median_s": quantile(seconds, 50), "p90_s": quantile(seconds, 90),
        "median_bytes": quantile(counted, 50), "p90_bytes": quantile(counted, 90),
        "median_dir_growth_bytes": quantile(growth, 50),
        "p90_dir_growth_bytes": quantile(growth, 90),
        "checkpoint_s": round(checkpoint_s, 3), "checkpoint_bytes": checkpoint_bytes,
        # A checkpoint is due every delta_max added passages: its cost per batch.
        "amortized_checkpoint_bytes": round(
            checkpoint_bytes * (added / max(batches, 1)) / per_checkpoint
        ),
        "amortized_checkpoint_s": round(
            checkpoint_s * (added / max(batches, 1)) / per_checkpoint, 4
        ),
        "seconds": [round(s, 4) for s in seconds], "bytes": counted,
        "dir_growth_bytes": growth,
    }


def process_io() -> dict[str, int]:
    """This process's I/O counters (/proc/self/io); zeros where the file is missing.

    rchar and wchar count every byte read and written through system calls (SQLite's
    page reads included, whether the page cache held them or not); read_bytes and
    write_bytes count what reached (or would reach) the disk.
    """
    names = ("rchar", "wchar", "read_bytes", "write_bytes")
    try:
        lines = Path("/proc/self/io").read_text().splitlines()
    except OSError:
        return dict.fromkeys(names, 0)
    fields = dict(line.split(": ", 1) for line in lines if ": " in line)
    return {name: int(fields.get(name, 0)) for name in names}


def dir_bytes(path: Path) -> int:
    """The size of the files directly in `path` (a collection is flat)."""
    total = 0
    for file in path.iterdir():
        try:
            total += file.stat().st_size if file.is_file() else 0
        except FileNotFoundError:  # a temporary file renamed away meanwhile
            continue
    return total


def quantile(values: list[float] | list[int], q: float) -> float:
    """The q-th percentile (0-100), rounded to 4 places; nan when there are no values."""
    if not values:
        return float("nan")
    return round(float(np.percentile(np.asarray(values, dtype=np.float64), q)), 4)
