"""A collection's manifest: the settings that made it, checked every time it is opened.

`manifest.json` holds the format version, the embedder (backend, model, fingerprint,
dimension, token limit), the chunker settings and the index policy. It is written once
when the collection is made (temporary file, fsync, rename) and only read afterwards:
several processes may open the collection at once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from retrieval.collection.index_policy import IndexPolicy
from retrieval.errors import CollectionFormatError, ModelMismatchError
from retrieval.ingestion.chunking import ChunkerSettings
from retrieval.models.embedding import Embedder

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def new_manifest(
    embedder: Embedder, chunker: ChunkerSettings, policy: IndexPolicy
) -> dict[str, Any]:
    """A new collection's manifest.

    Args:
        policy: which index the collection uses at each size, fixed for its life.
    """
    index: dict[str, Any] = {
        "spec": policy.spec, "policy": policy.to_dict(), "metric": "inner_product",
        "normalized": True,
    }
    return {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "embedder": embedder.spec(),
        "chunker": chunker.to_dict(),
        "index": index,
    }


def read_manifest(path: Path) -> dict[str, Any] | None:
    file = path / MANIFEST
    if not file.exists():
        return None
    try:
        manifest: dict[str, Any] = json.loads(file.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CollectionFormatError(f"{file} is unreadable ({error})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CollectionFormatError(
            f"{file} has format version {manifest.get('format_version')!r}; "
            f"this engine reads version {FORMAT_VERSION}: re-index into a new collection"
        )
    return manifest


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Writes the manifest atomically (temporary file, fsync, rename)."""
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path / MANIFEST)


def check_embedder(path: Path, manifest: dict[str, Any], embedder: Embedder) -> None:
    """Refuses an embedder other than the collection's own: its vectors would not compare.

    Backend, source model fingerprint, dim and export recipe must match. An int8 export
    redone on another machine may differ in its last bits (the quantiser's statistics
    are float sums): that is logged, not refused; the exports are alike, not bit-equal.
    """
    built, given = manifest["embedder"], embedder.spec()
    keys = ("backend", "fingerprint", "dim", "recipe")
    if built.get("export_fingerprint") != given.get("export_fingerprint") and all(
        built.get(key) == given.get(key) for key in keys
    ):
        logger.warning(
            "%s was built with OpenVINO export %s; this machine's export of the same model and "
            "recipe is %s",
            path,
            built.get("export_fingerprint"),
            given.get("export_fingerprint"),
        )
    if any(built.get(key) != given.get(key) for key in keys):
        raise ModelMismatchError(
            f"{path} was built with model {built.get('model')!r} "
            f"(backend {built.get('backend')}, fingerprint {built.get('fingerprint')}, "
            f"dim {built.get('dim')}), not {given.get('model')!r} "
            f"(backend {given.get('backend')}, fingerprint {given.get('fingerprint')}, "
            f"dim {given.get('dim')}): open it with its own model, or index into a new collection"
        )


def check_settings(
    path: Path, manifest: dict[str, Any], chunker: ChunkerSettings | None,
    policy: IndexPolicy | None,
) -> None:
    """Refuses settings that differ from those the collection was made with."""
    if chunker is not None and chunker.to_dict() != manifest["chunker"]:
        raise ModelMismatchError(
            f"{path} was chunked with {manifest['chunker']}, not {chunker.to_dict()}: "
            "use the same settings, or index into a new collection"
        )
    built = IndexPolicy.from_manifest(manifest["index"])
    if policy is not None and policy.spec != built.spec:
        raise ModelMismatchError(
            f"{path} uses index {built.spec!r}, not {policy.spec!r}: "
            "use the same index, or index into a new collection"
        )
