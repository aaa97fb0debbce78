"""What every `retrieval bench` benchmark shares: the BBC corpus path, percentiles, output.

A leaf module (numpy and the standard library only), so that the engine's benchmarks
(ingest.py, index.py) and the service's import it without importing one another.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from retrieval.evaluation.location import bbc_corpus

BBC = bbc_corpus()


def print_result(result: dict[str, Any], as_json: bool, table: Any) -> None:
    """Prints a benchmark's result as JSON, or as the Markdown that `table(result)` makes."""
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(table(result))
    sys.stdout.flush()


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of durations in seconds, in milliseconds; nan if none."""
    if not seconds:
        return float("nan")
    return round(1000 * float(np.percentile(np.asarray(seconds), q)), 3)


