"""The CPU this runs on: its model and the instruction sets that decide int8 speed.

OpenVINO's int8 kernels gain most from AVX-512 VNNI (and AMX); on AVX2 alone int8 gains
far less, so every benchmark and the automatic backend choice name them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni")


def cpu_info() -> dict[str, Any]:
    """{"model", "cpus", "avx2", "avx512f", "avx512_vnni", "amx"} from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux: the model stays unknown and every flag False
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


def cpu_summary(info: dict[str, Any] | None = None) -> str:
    """One line: "MODEL (N CPUs); avx2 yes, avx512f yes, avx512_vnni yes, amx no"."""
    info = info or cpu_info()
    flags = ", ".join(f"{flag} {'yes' if info[flag] else 'no'}" for flag in CPU_FLAGS)
    return f"{info['model']} ({info['cpus']} CPUs); {flags}, amx {' '.join(info['amx']) or 'no'}"
