"""Embedding backends by name: the one place a backend name becomes an `Embedder`.

A collection's manifest records its backend's name; opening it builds that backend
again from this registry. Each entry imports its libraries only when called, so
naming a backend costs nothing until it is used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrieval.errors import CollectionFormatError, InputError
from retrieval.models.embedding import DEFAULT_MODEL, Embedder

logger = logging.getLogger(__name__)

# The backend of new collections when none is named: "auto" is the fastest on this CPU
# of those that passed the quality guard (retrieval/models/choice.py), measured once per machine.
# RETRIEVAL_BACKEND names one instead.
DEFAULT_BACKEND = "auto"
BACKEND_VARIABLE = "RETRIEVAL_BACKEND"


def torch_embedder(model: str | Path) -> Embedder:
    from retrieval.models.embedding import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(model)


def openvino_embedder(precision: str) -> Callable[[str | Path], Embedder]:
    def make(model: str | Path) -> Embedder:
        from retrieval.models.openvino import OpenVinoEmbedder

        return OpenVinoEmbedder(model, precision=precision)

    return make


BACKENDS: dict[str, Callable[[str | Path], Embedder]] = {
    "torch": torch_embedder,
    "openvino-int8": openvino_embedder("int8"),
    "openvino-fp32": openvino_embedder("fp32"),
}


def default_backend(model: str | Path = DEFAULT_MODEL) -> str:
    """The backend of new collections: $RETRIEVAL_BACKEND, else the automatic choice.

    Raises:
        InputError: $RETRIEVAL_BACKEND names no backend.
    """
    named = os.environ.get(BACKEND_VARIABLE, "").strip() or DEFAULT_BACKEND
    if named != "auto":
        if named not in BACKENDS:
            raise InputError(f"{BACKEND_VARIABLE}={named!r} names no backend: use auto or "
                             f"one of {', '.join(BACKENDS)}")
        return named
    from retrieval.models.choice import chosen_backend
    from retrieval.models.embedding import resolve_model

    location = resolve_model(model)
    if not isinstance(location, Path):
        return "torch"  # not a folder: make_embedder reports it
    return chosen_backend(location).backend


def describe_default() -> str:
    """What new collections get and why, without measuring anything (for `retrieval info`)."""
    named = os.environ.get(BACKEND_VARIABLE, "").strip() or DEFAULT_BACKEND
    if named != "auto":
        return f"{named} (from ${BACKEND_VARIABLE})"
    from retrieval.models.choice import cached_choice
    from retrieval.models.embedding import default_model_path

    choice = cached_choice(default_model_path())
    if choice is None:
        return "auto: not measured on this machine yet (done when a first collection is made)"
    return choice.reason()


def remeasure_default(model: str | Path = DEFAULT_MODEL) -> str:
    """Measures the automatic choice again and caches it; says what it chose and how noisy.

    For a choice made while the machine was busy (`retrieval info --remeasure`).

    Raises:
        InputError: the model is no folder on disk.
    """
    from retrieval.models.choice import chosen_backend
    from retrieval.models.embedding import resolve_model

    location = resolve_model(model)
    if not isinstance(location, Path):
        raise InputError(f"model {model!r} is no folder on disk: nothing to measure")
    reason = chosen_backend(location, remeasure=True).reason()
    named = os.environ.get(BACKEND_VARIABLE, "").strip()
    if named and named != "auto":
        reason += f" (${BACKEND_VARIABLE}={named} still overrides it)"
    return reason


def make_embedder(backend: str | None = None, model: str | Path = DEFAULT_MODEL) -> Embedder:
    """The embedder for a backend name: "torch", "openvino-int8" or "openvino-fp32".

    None (or "auto") picks `default_backend(model)`.

    Raises:
        InputError: an unknown backend.
    """
    if backend in (None, "auto"):
        backend = default_backend(model)
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
