"""Exact and near-duplicate articles: MinHash signatures of their text, banded for LSH.

Republishers keep a story's body and change its edges: a new headline and byline, a
dateline ("LONDON (Reuters) -"), a trimmed or reordered last paragraph, a few words,
and a house style's words at every occurrence ("said" becomes "stated"). So an article
is described by the set of its body's 4-word shingles (the headline is left out), and
two articles are near-duplicates when most of the smaller one's shingles are in the
other (containment, robust to a dropped paragraph) and the two sets overlap enough that
a short brief does not match a long story (Jaccard, which is at most the ratio of their
sizes). Both are estimated from 128-permutation MinHash signatures and the sets' sizes.
docs/duplicates.md has the measurements that chose this over Jaccard alone and over the
embeddings' centroids (scripts/dup_study.py), and 4 words over 5 (scripts/wire_copies.py).

Finding candidates without comparing every pair: the signature is cut into BANDS bands
of ROWS values; two articles sharing any band's values are candidates (LSH), and a
candidate is kept only if it passes the rule. The store keeps each article's band keys
in an indexed table, so finding candidates is a few index lookups inside the write
transaction (groups.py).

The signature: each shingle's 32-bit SHA-1 prefix is mixed by MurmurHash3's finalizer
(a fixed bijection), then goes through NUM_PERM affine maps a h + b mod 2^32 (a odd, so
each map is a bijection too), and the signature keeps each map's least value. It is
computed here with numpy, as datasketch 2's MinHash computes it by default (its
"affine32" scheme, the maps drawn the same way from the same seed):

- the values must never change under a collection's feet, and datasketch's default did
  between 1.x ("legacy": (a h + b) mod (2^61 - 1), cut to 32 bits) and 2.0, which a
  plain upgrade would have mixed into one collection's groups. The scheme is now part
  of the rule stored in the collection, so a collection grouped by another is regrouped;
- importing datasketch cost every indexing process 0.6-0.9 s (it imports scipy), a
  sixth of indexing 200 articles.

`tests/test_duplicates.py` checks that the two agree bit for bit.

Everything here is a pure function of text; the store decides groups.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# Words per shingle: long enough that articles on one topic share few shingles, short
# enough that a changed word breaks only a few of them. A wire desk replaces frequent
# words everywhere ("said" -> "stated", 7.5 occurrences for 3 words): with 5 words,
# 2.8% of such copies (3 words replaced) and 4.8% (5 words) left their original's group,
# with 4 words 1.2% and 1.7%, for one more merge of two BBC articles (an updated story,
# 55% of its 5-word shingles shared) and no follow-up (scripts/wire_copies.py, README).
SHINGLE_WORDS = 4
NUM_PERM = 128
# 64 bands of 2 rows: a pair at Jaccard 0.3 is a candidate with p = 0.998, at 0.25 0.98.
BANDS, ROWS = 64, 2
SEED = 1  # fixed: stored signatures must stay comparable with new ones, in every process
SCHEME = "affine32"  # named in the stored rule: see the module's docstring
# MurmurHash3's 32-bit finalizer: (shift, multiplier, shift, multiplier, shift).
FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35),
          np.uint32(16))
EMPTY = np.uint32((1 << 32) - 1)  # the signature of an empty set, in every place
# Chosen on the BBC measurement (docs/duplicates.md): the least Jaccard similarity and containment
# (share of the smaller article's shingles found in the other) of one group.
JACCARD = 0.3
CONTAINMENT = 0.7
# Articles read per band bucket: bounds a write's cost when many articles share text
# (boilerplate, or a synthetic benchmark repeating one passage).
MAX_PER_BUCKET = 50

_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class DuplicateRule:
    """When two articles are one group; stored in the collection, so that a change regroups.

    Attributes:
        jaccard: least estimated Jaccard similarity of the two shingle sets.
        containment: least estimated share of the smaller set found in the larger; 0
            judges by Jaccard alone.
    """

    jaccard: float = JACCARD
    containment: float = CONTAINMENT

    def __post_init__(self) -> None:
        if not 0.0 < self.jaccard <= 1.0 or not 0.0 <= self.containment <= 1.0:
            raise ValueError(
                f"jaccard must be in (0, 1] and containment in [0, 1], "
                f"got {self.jaccard} and {self.containment}"
            )

    def describe(self) -> str:
        """The rule as stored in the collection's meta table."""
        return (
            f"minhash-{SCHEME}:w{SHINGLE_WORDS}:p{NUM_PERM}:b{BANDS}x{ROWS}:s{SEED}"
            f":j{self.jaccard:g}:c{self.containment:g}"
        )

    def score(self, a: Fingerprint, b: Fingerprint) -> float | None:
        """How alike two articles are (their estimated containment), or None when the
        rule does not make them one group."""
        jaccard = similarity(a.signature, b.signature)
        if jaccard < self.jaccard:
            return None
        shared = jaccard * (a.size + b.size) / (1.0 + jaccard)  # |A & B| from |A|, |B|, J
        contained = min(1.0, shared / min(a.size, b.size))
        return contained if contained >= self.containment else None


DEFAULT_RULE = DuplicateRule()


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What the store keeps of an article's text to find its duplicates.

    Attributes:
        signature: (NUM_PERM,) uint32 MinHash values.
        size: how many distinct shingles the text has.
        exact: a digest of the signature: equal shingle sets give equal digests, so an
            exact copy is found by one index lookup.
        bands: BANDS band keys (signed 64-bit, for SQLite INTEGER).
    """

    signature: NDArray[np.uint32]
    size: int
    exact: str = ""
    bands: tuple[int, ...] = ()


def shingles(text: str) -> list[bytes]:
    """The text's distinct SHINGLE_WORDS-word shingles, lowercased; a shorter text is one
    shingle."""
    words = _WORD.findall(text.lower())
    if not words:  # punctuation only: the text itself is all there is to compare
        return [text.strip().encode("utf-8")]
    if len(words) <= SHINGLE_WORDS:
        return [" ".join(words).encode("utf-8")]
    grams = (" ".join(words[i : i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1))
    return list(dict.fromkeys(gram.encode("utf-8") for gram in grams))


@functools.cache
def permutations() -> tuple[NDArray[np.uint32], NDArray[np.uint32]]:
    """The NUM_PERM affine maps' (a, b): a odd, b any 32-bit value, drawn from SEED."""
    draw = np.random.RandomState(SEED)
    a = draw.randint(0, 1 << 31, NUM_PERM, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = draw.randint(0, 1 << 32, NUM_PERM, dtype=np.uint32)
    return a, b


def minhash(grams: Sequence[bytes]) -> NDArray[np.uint32]:
    """The (NUM_PERM,) signature of a set of shingles (all EMPTY for an empty set)."""
    if not grams:
        return np.full(NUM_PERM, EMPTY, dtype=np.uint32)
    h = np.array(
        [int.from_bytes(hashlib.sha1(gram).digest()[:4], "little") for gram in grams],
        dtype=np.uint32,
    )
    s1, m1, s2, m2, s3 = FMIX32
    h ^= h >> s1
    h *= m1  # uint32 products wrap around at 2^32: the arithmetic the scheme is defined in
    h ^= h >> s2
    h *= m2
    h ^= h >> s3
    a, b = permutations()
    values: NDArray[np.uint32] = (h[:, None] * a + b).min(axis=0)
    return values


def fingerprint(text: str) -> Fingerprint:
    """The MinHash of the text's shingles, with its digest and band keys."""
    grams = shingles(text)
    sig = minhash(grams)
    exact = hashlib.blake2b(to_blob(sig), digest_size=16).hexdigest()
    return Fingerprint(sig, len(grams), exact, band_keys(sig))


def band_keys(sig: NDArray[np.uint32]) -> tuple[int, ...]:
    """One key per band of ROWS values: articles sharing a key are candidates."""
    keys = []
    for band in range(BANDS):
        chunk = sig[band * ROWS : (band + 1) * ROWS].astype("<u4").tobytes()
        digest = hashlib.blake2b(chunk, digest_size=8, person=band.to_bytes(4, "little")).digest()
        keys.append(int.from_bytes(digest, "little", signed=True))
    return tuple(keys)


def similarity(a: NDArray[np.uint32], b: NDArray[np.uint32]) -> float:
    """Estimated Jaccard similarity of two signatures: the share of equal values."""
    return float(np.count_nonzero(a == b)) / len(a)


def best_match(
    found: Fingerprint, candidates: Sequence[tuple[str, Fingerprint]], rule: DuplicateRule
) -> str | None:
    """The id of the candidate most like `found` that the rule groups with it, if any.

    Ties go to the first candidate given (the store gives the oldest first).
    """
    best, best_score = None, -1.0
    for candidate_id, candidate in candidates:
        score = rule.score(found, candidate)
        if score is not None and score > best_score:
            best, best_score = candidate_id, score
    return best


def to_blob(sig: NDArray[np.uint32]) -> bytes:
    return sig.astype("<u4").tobytes()


def from_blob(blob: bytes) -> NDArray[np.uint32]:
    values: NDArray[np.uint32] = np.frombuffer(blob, dtype="<u4").astype(np.uint32)
    return values
