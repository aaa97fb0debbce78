"""Which FAISS index a collection uses at its size, and when a new checkpoint is due.

A collection's index is a checkpoint (an immutable FAISS index of the store as of one
generation, saved to disk) plus the passages added since, held in a small exact index
beside it, and the ids deleted since, excluded from every search (see live_index.py).
The policy decides two things, both from counts alone:

- the spec of the next checkpoint: under "auto", exact ("Flat") up to `exact_up_to`
  passages, then IVF over 8-bit codes with a number of lists for the size. The lists
  are the power of two nearest 4·√n (`ivf_lists`), so the wanted number doubles each
  time the collection grows fourfold (past 32,768; 131,072; 524,288; 2,097,152
  passages). A checkpoint re-clusters (trains new lists) when the wanted number is more
  than the checkpoint's own, or under a quarter of it; otherwise it keeps the trained
  lists and only adds and removes vectors.
- whether a checkpoint is due: once `delta_max` passages were added since the last one
  (the exact side index then costs as much to search as ~2 ms of the query), or once
  deleted passages make up `tombstones_max` of it, or when the spec should change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from retrieval.collection.index import APPROXIMATE_SPEC, approximate_spec
from retrieval.errors import InputError

# Exact search up to this many passages: at 20,000 vectors an exact scan costs about as
# much as embedding the query with the int8 model (~3 ms on 2 cores), and it grows
# linearly from there, while IVF,SQ8 stays near 1 ms (`retrieval bench index`).
EXACT_UP_TO = 20_000
# Passages added since the last checkpoint before the next one is due: the side index is
# exact, and 20,000 vectors scan in ~1.7 ms on one core.
DELTA_MAX = 20_000
# Share of a checkpoint's vectors deleted since, before the next one is due.
TOMBSTONES_MAX = 0.1


@dataclass(frozen=True, slots=True)
class IndexPolicy:
    """How a collection chooses its index.

    Attributes:
        spec: "auto" (by size, see the module docstring) or a FAISS factory string
            used at every size ("Flat", "IVF1024,SQ8", "HNSW32,SQ8", ...).
        exact_up_to: under "auto", exact search up to this many passages.
        approximate: under "auto", the spec above it ("IVF,SQ8": lists chosen by size).
        delta_max: passages added since the last checkpoint before a new one is due.
        tombstones_max: share of the checkpoint deleted since, before a new one is due.
    """

    spec: str = "auto"
    exact_up_to: int = EXACT_UP_TO
    approximate: str = APPROXIMATE_SPEC
    delta_max: int = DELTA_MAX
    tombstones_max: float = TOMBSTONES_MAX

    def __post_init__(self) -> None:
        if self.exact_up_to < 0 or self.delta_max < 1 or not 0 < self.tombstones_max <= 1:
            raise InputError(f"invalid index policy {self}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_manifest(cls, index: dict[str, Any]) -> IndexPolicy:
        """The policy a manifest's "index" section names (older layouts included)."""
        if "policy" in index:
            return cls(**index["policy"])
        auto = index.get("auto")  # format of the first collections: spec = the index in use
        if auto:
            return cls("auto", exact_up_to=auto["above"], approximate=auto["spec"])
        return cls(str(index["spec"]))

    def wanted_spec(self, n_passages: int, current: str | None) -> str:
        """The spec a checkpoint of n passages should have, given the current one's."""
        if self.spec != "auto":
            return self.spec
        exact = current is None or not current.startswith(("IVF", "HNSW"))
        # Hysteresis: an approximate index goes back to exact only at half the size.
        if n_passages <= (self.exact_up_to if exact else self.exact_up_to // 2):
            return "Flat"
        if self.approximate != APPROXIMATE_SPEC:
            return self.approximate
        wanted = approximate_spec(n_passages)
        lists, wanted_lists = ivf_lists_of(current or ""), ivf_lists_of(wanted)
        if lists and lists // 4 <= wanted_lists <= lists:
            return str(current)  # trained lists still fit: no re-clustering
        return wanted

    def checkpoint_due(
        self, *, base_spec: str, base_size: int, added: int, removed: int, n_passages: int
    ) -> str | None:
        """Why a new checkpoint is due (for the log), or None when it is not."""
        if added >= self.delta_max:
            return f"{added} passages added since the last checkpoint"
        if removed and removed >= self.tombstones_max * max(base_size, 1):
            return f"{removed} of its {base_size} passages deleted since the last checkpoint"
        wanted = self.wanted_spec(n_passages, base_spec)
        if wanted != base_spec and (added or removed or base_size != n_passages):
            return f"the index should become {wanted} at {n_passages} passages"
        return None


def ivf_lists_of(spec: str) -> int:
    """The number of lists in an "IVF<n>,..." spec; 0 for other specs."""
    head = spec.split(",")[0]
    return int(head[3:]) if head.startswith("IVF") and head[3:].isdigit() else 0
