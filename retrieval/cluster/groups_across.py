"""Duplicate groups across shards: an article and its copy in another shard collapse.

Each shard groups its own articles at write time (retrieval/collection/groups.py), so
a wire story and its republished copy that hash to different shards are in two groups,
and a collapsed search over shards would return both. A collapsed search's query phase
therefore brings back, with its candidates, their articles' MinHash fingerprints; the
router compares the candidates of different shards by the same rule the store groups
by, and joins the groups of any pair it holds alike (union-find over group keys).

What one collection does differs in one way: there a new article joins the group of
its closest earlier article and groups never merge, while here two groups linked by
any alike pair of candidates become one. For copies of one story, the common case,
both give one group.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retrieval.collection.duplicates import DEFAULT_RULE, DuplicateRule, Fingerprint

# (article id, shard, group key, fingerprint) of one candidate article.
Member = tuple[str, int, str, Fingerprint]


def linked_groups(members: Sequence[Member], rule: DuplicateRule = DEFAULT_RULE) -> dict[str, str]:
    """Each group key to the key of the cross-shard group it belongs to (the least key of
    the linked ones); keys linked to nothing map to themselves."""
    parent = {key: key for _, _, key, _ in members}

    def root(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for i, j in alike_pairs(members, rule):
        a, b = root(members[i][2]), root(members[j][2])
        if a != b:
            parent[max(a, b)] = min(a, b)
    return {key: root(key) for key in parent}


def alike_pairs(members: Sequence[Member], rule: DuplicateRule) -> list[tuple[int, int]]:
    """Index pairs of members in different shards that the rule makes one group."""
    if len(members) < 2:
        return []
    signatures = np.stack([fingerprint.signature for *_, fingerprint in members])
    shards = np.array([shard for _, shard, _, _ in members])
    # Estimated Jaccard of every pair at once; only pairs above the rule's floor are
    # scored one by one (the rule also asks for containment).
    jaccard = (signatures[:, None, :] == signatures[None, :, :]).mean(axis=2)
    near = (jaccard >= rule.jaccard) & (shards[:, None] != shards[None, :])
    pairs = []
    for i, j in zip(*np.nonzero(np.triu(near, k=1)), strict=True):
        a, b = members[i][3], members[j][3]
        if (a.exact and a.exact == b.exact) or rule.score(a, b) is not None:
            pairs.append((int(i), int(j)))
    return pairs
