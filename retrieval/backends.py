"""Embedding backends by name: the one place a backend name becomes an `Embedder`.

A collection's manifest records its backend's name; opening it builds that backend
again from this registry. Each entry imports its libraries only when called, so
naming a backend costs nothing until it is used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrieval.embedding import DEFAULT_MODEL, Embedder
from retrieval.errors import CollectionFormatError, InputError

logger = logging.getLogger(__name__)

# The backend of new collections when none is chosen. openvino-int8 is 2.6x faster end to
# end and embeds a query in ~2-3 ms instead of 12-15, but it moved MED's hybrid nDCG@10
# by -0.007 (30 queries; README), past the 0.005 the evaluation allows, so the exact
# model stays the default and the fast one is a collection setting (--backend).
DEFAULT_BACKEND = "torch"


def torch_embedder(model: str | Path) -> Embedder:
    from retrieval.embedding import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(model)


def openvino_embedder(precision: str) -> Callable[[str | Path], Embedder]:
    def make(model: str | Path) -> Embedder:
        from retrieval.embedding_openvino import OpenVinoEmbedder

        return OpenVinoEmbedder(model, precision=precision)

    return make


BACKENDS: dict[str, Callable[[str | Path], Embedder]] = {
    "torch": torch_embedder,
    "openvino-int8": openvino_embedder("int8"),
    "openvino-fp32": openvino_embedder("fp32"),
}


def default_backend() -> str:
    """DEFAULT_BACKEND when its libraries are installed (retrieval[fast]), else "torch"."""
    from importlib.util import find_spec

    if DEFAULT_BACKEND.startswith("openvino") and not (find_spec("openvino") and find_spec("nncf")):
        logger.info("openvino/nncf not installed (retrieval[fast]): embedding with torch")
        return "torch"
    return DEFAULT_BACKEND


def make_embedder(backend: str | None = None, model: str | Path = DEFAULT_MODEL) -> Embedder:
    """The embedder for a backend name: "torch", "openvino-int8" or "openvino-fp32".

    None picks `default_backend()`.

    Raises:
        InputError: an unknown backend.
    """
    backend = backend or default_backend()
    if backend not in BACKENDS:
        choices = ", ".join(BACKENDS)
        raise InputError(f"unknown embedding backend {backend!r}: use one of {choices}")
    return BACKENDS[backend](model)


def default_embedder(spec: dict[str, Any]) -> Embedder:
    """Builds the embedder a manifest names (its backend and model)."""
    backend = spec.get("backend", "torch")
    if backend not in BACKENDS:
        raise CollectionFormatError(f"unknown embedding backend {backend!r} in the manifest")
    return make_embedder(backend, spec["model"])
