"""`retrieval index PATH... --shards DIR --ray ADDRESS`: chunk and embed on a Ray cluster.

The articles are read where the command runs, by the same loaders as `retrieval index`
(so bad input is reported, skipped or refused exactly as there). Then:

1. Each shard's writer (a Ray actor on the node whose resources name the shard, so it
   writes to that node's disk) says which of its articles are stored unchanged; those
   are skipped before any model runs.
2. Ray Data chunks and embeds the rest over an actor pool, each actor holding the model
   once: `map_batches(ChunkEmbed, compute=ActorPoolStrategy(size=N))`. The articles are
   sorted by length first, so a batch holds texts of similar length (less padding).
3. Each embedding batch is split by shard, and each shard writes its share in ONE
   transaction (`ShardServer.write_embedded`).

The crash rule of `retrieval index` holds per shard: a killed worker, writer or driver
leaves every shard at a committed generation (a transaction is all or nothing), and
running the command again skips what was stored, writing the rest without duplicates
(a retried batch finds its articles stored unchanged).

Ray is imported here only: this module is loaded by --ray alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import ray

from retrieval.cluster.layout import ShardLayout, open_shard, read_layout, shard_of
from retrieval.cluster.shard_server import ShardServer
from retrieval.collection.ingest import IngestReport, embed_articles, prepared
from retrieval.collection.manifest import check_embedder
from retrieval.ingestion.chunking import ChunkerSettings
from retrieval.models.backends import default_embedder
from retrieval.records import Article

REPORT_FIELDS = ("added", "updated", "unchanged", "passages_added", "passages_removed")


class ShardWriter:
    """A Ray actor writing into one shard on its node's disk."""

    def __init__(self, shards_dir: str, index: int) -> None:
        layout = read_layout(shards_dir)
        self.server = ShardServer(open_shard(layout, index, background=False), index)

    def content_hashes(self, article_ids: Sequence[str]) -> dict[str, str]:
        return self.server.content_hashes(article_ids)

    def write(self, items: list[tuple[Article, list[Any]]]) -> IngestReport:
        return self.server.write_embedded(items)

    def checkpoint(self) -> str | None:
        """Saves the shard's index when enough changed (as `retrieval index` does)."""
        collection = self.server.collection
        if not collection.checkpoint_may_be_due():
            return None
        collection.refresh()
        return collection.checkpoint() if collection.checkpoint_due() else None


class ChunkEmbed:
    """A Ray Data actor: holds the model; chunks, embeds and writes a batch of articles."""

    def __init__(self, shards_dir: str, manifest: dict[str, Any], writers: list[Any]) -> None:
        self.embedder = default_embedder(manifest["embedder"])
        check_embedder(Path(shards_dir), manifest, self.embedder)
        self.chunker = ChunkerSettings(**manifest["chunker"])
        self.writers = writers

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        articles = [article_from_json(text) for text in batch["article"]]
        rows = embed_articles(articles, self.embedder, self.chunker)
        mine: dict[int, list[tuple[Article, list[Any]]]] = {}
        for article, passages in zip(articles, rows, strict=True):
            mine.setdefault(shard_of(article.id, len(self.writers)), []).append(
                (article, passages)
            )
        reports = ray.get([self.writers[i].write.remote(items) for i, items in mine.items()])
        return {name: np.array([getattr(r, name) for r in reports]) for name in REPORT_FIELDS}


def index_on_ray(
    address: str, shards_dir: str, articles: Sequence[Article], *, batch_size: int = 64,
    actors: int = 1, actor_cpus: float = 1.0,
) -> IngestReport:
    """Indexes the articles into the sharded collection at `shards_dir`, on Ray.

    Args:
        address: the Ray cluster (host:port of its head, or "auto"); joined if this
            process is not connected yet.
        batch_size: articles per embedding batch, and so per shard transaction at most.
        actors: embedding actors in the pool (each loads the model once).
        actor_cpus: CPUs each embedding actor reserves (its model threads follow it).

    Raises:
        InputError: an article with neither text nor title, or an id given twice.
    """
    started = time.perf_counter()
    articles = prepared(articles)
    layout = read_layout(shards_dir)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    writers = start_writers(layout)
    report = IngestReport()
    changed = skip_unchanged(articles, layout, writers, report)
    if changed:
        changed.sort(key=lambda article: len(article.text))  # batches of like lengths
        dataset = ray.data.from_items(
            [{"article": json.dumps(asdict(a), ensure_ascii=False)} for a in changed],
            override_num_blocks=max(1, min(len(changed) // batch_size, 64)),
        )
        results = dataset.map_batches(
            ChunkEmbed, fn_constructor_kwargs={
                "shards_dir": str(layout.path), "manifest": layout.collection,
                "writers": writers,
            },
            batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=actor_cpus,
        ).take_all()
        for row in results:
            report.add(IngestReport(**{n: int(row[n]) for n in REPORT_FIELDS}))
    ray.get([writer.checkpoint.remote() for writer in writers])
    report.seconds = time.perf_counter() - started
    return report


def start_writers(layout: ShardLayout) -> list[Any]:
    """One writer actor per shard, on the node with its disk when the cluster says which."""
    available = ray.cluster_resources()  # type: ignore[no-untyped-call]
    remote = ray.remote(ShardWriter)
    writers = []
    for index in range(layout.n):
        resources = {f"shard{index}": 0.01} if f"shard{index}" in available else {}
        writers.append(
            remote.options(num_cpus=0.1, resources=resources).remote(str(layout.path), index)
        )
    return writers


def skip_unchanged(
    articles: Sequence[Article], layout: ShardLayout, writers: list[Any], report: IngestReport
) -> list[Article]:
    """The articles not stored unchanged in their shard; counts the others in `report`."""
    mine: dict[int, list[Article]] = {}
    for article in articles:
        mine.setdefault(layout.shard_of(article.id), []).append(article)
    known: dict[str, str] = {}
    for hashes in ray.get([writers[i].content_hashes.remote([a.id for a in part])
                           for i, part in mine.items()]):
        known.update(hashes)
    changed = [a for a in articles if known.get(a.id) != a.content_hash()]
    report.unchanged += len(articles) - len(changed)
    return changed


def article_from_json(text: str) -> Article:
    return Article(**json.loads(text))
