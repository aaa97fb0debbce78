"""The service's configuration, read from the environment (prefix RETRIEVAL_) or passed in.

No instance lives at module level: `create_app(Settings(...))` in tests, `Settings()` (the
environment) in `retrieval serve`, which overrides fields from its command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from retrieval.cli.main import default_collection

# The most hits one request may ask for, whatever max_k says: the request schema
# advertises it, and a search this deep is already far from interactive.
K_CEILING = 1000
# Queries longer than this many word pieces are rare: warming up "queries" stops here.
QUERY_WARM_UP_TOKENS = 64


class Settings(BaseSettings):
    """Where the collection is, where to listen, and the service's limits.

    Attributes:
        collection: collection directory (RETRIEVAL_COLLECTION, as for the CLI).
        host, port: where `retrieval serve` listens.
        api_key: required (X-API-Key or Authorization: Bearer) to add or delete
            articles; None leaves writes open, which suits a service on 127.0.0.1.
        max_k: the most hits one search may ask for (k), at most K_CEILING.
        batch_window_ms: how long the micro-batcher waits for more queries after the
            first one; 0 turns batching off (one model call per request).
        max_batch: the most queries embedded in one model call; 1 turns batching off.
        lock_timeout_s: how long a write waits for another write to finish (another
            process's, or another request's in this one) before it is refused with 503
            and Retry-After.
        max_body_bytes: the largest request body accepted; a larger one is refused with
            413 as soon as its Content-Length, or its bytes received so far, say so.
        max_queued: the most queries waiting for the search thread; a search that would
            queue more is refused at once with 503 and Retry-After (load shedding).
        search_timeout_s: how long a search may wait and run before it is answered with
            503 and Retry-After; a queued search past it is dropped, not run.
        max_highlight_hits: the most hits one request may ask to highlight, counted as
            queries x min(k, HIGHLIGHT_MAX_HITS); more is refused with 422.
        search_threads: searches answered at once, after their batch is embedded. 1
            for one process (the model and FAISS compete for the same cores); a sharded
            collection on Ray mostly waits for shards' answers, so more threads keep
            concurrent searches' rounds in flight together (service/ray_serve.py).
        warm_up: what the model prepares before the service says it is ready: "queries"
            (every batch shape of queries up to QUERY_WARM_UP_TOKENS word pieces, about
            1 s with OpenVINO), "all" (every shape up to the model's limit, the write
            path's too: about 10 s on 2 cores, after which memory stays flat) or "none".
    """

    model_config = SettingsConfigDict(env_prefix="RETRIEVAL_", extra="ignore")

    collection: Path = Field(default_factory=default_collection)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_key: SecretStr | None = None
    max_k: int = Field(default=100, ge=1, le=K_CEILING)
    batch_window_ms: float = Field(default=2.0, ge=0, le=1000)
    max_batch: int = Field(default=32, ge=1, le=1024)
    lock_timeout_s: float = Field(default=1.0, ge=0)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    max_queued: int = Field(default=256, ge=1)
    search_timeout_s: float = Field(default=10.0, gt=0)
    max_highlight_hits: int = Field(default=100, ge=1)
    search_threads: int = Field(default=1, ge=1, le=256)
    warm_up: Literal["none", "queries", "all"] = "queries"

    @property
    def batching(self) -> bool:
        """False when the settings ask for one model call per request."""
        return self.batch_window_ms > 0 and self.max_batch > 1
