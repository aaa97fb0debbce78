"""Where the labelled sets and the BBC corpus are: `$RETRIEVAL_DATASETS`, one folder.

They are not shipped with the package (each has its own licence). The folder holds one
BEIR-layout set per subfolder (scifact/, cranfield/, med/, squad11_dev/, bbc/): the
quality guard, the benchmarks and the tests read them from there. Unset, it is the
`datasets` folder beside the repository's own folder, where the project keeps them.
Standard library only: every benchmark imports it.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "RETRIEVAL_DATASETS"
# The repository's parent holds `shared/datasets` on the project's machines.
BESIDE_REPOSITORY = Path(__file__).resolve().parents[3] / "shared" / "datasets"


def datasets_dir() -> Path:
    """The folder of labelled sets: $RETRIEVAL_DATASETS, else the project's own."""
    return Path(os.environ.get(ENV) or BESIDE_REPOSITORY)


def bbc_corpus() -> Path:
    """The BBC news corpus (JSONL) that the benchmarks index."""
    return datasets_dir() / "bbc" / "corpus.jsonl"
