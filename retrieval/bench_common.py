"""What every `retrieval bench` benchmark shares: the BBC corpus path, percentiles, output.

A leaf module (numpy and the standard library only), so that bench.py, bench_index.py
and the service's benchmarks import it without importing one another.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BBC = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "bbc" / "corpus.jsonl"


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


CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni")


def cpu_info() -> dict[str, Any]:
    """The CPU model and the instruction sets that decide FAISS and OpenVINO speed."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    info: dict[str, Any] = {"model": fields.get("model name", "unknown"), "cpus": os.cpu_count()}
    info.update({flag: flag in flags for flag in CPU_FLAGS})
    info["amx"] = sorted(f for f in flags if f.startswith("amx"))
    return info
