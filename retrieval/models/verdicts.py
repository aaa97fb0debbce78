"""The quality guard's recorded verdicts: which faster backends may stand in for torch.

`retrieval guard --record` (evaluation/guard.py) measures a verdict and writes it here;
the automatic backend choice (choice.py) reads it. Reading lives in this layer so that
choosing an embedder never imports the evaluation that produced the verdict.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The verdicts shipped with the package, measured with `retrieval guard --record`.
VERDICTS_FILE = Path(__file__).with_name("guard_verdicts.json")


def read_verdicts(path: Path = VERDICTS_FILE) -> dict[str, dict[str, Any]]:
    """{backend: verdict as a dict}; {} when the file does not exist."""
    if not path.exists():
        return {}
    data: dict[str, dict[str, Any]] = json.loads(path.read_text("utf-8"))
    return data


def record_verdict(backend: str, verdict: dict[str, Any], path: Path = VERDICTS_FILE) -> None:
    """Adds or replaces the backend's verdict in the file, written whole then renamed."""
    verdicts = read_verdicts(path)
    verdicts[backend] = verdict
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(verdicts, indent=2, sort_keys=True) + "\n", "utf-8")
    tmp.replace(path)


def passed(backend: str, fingerprint: str, recipe: str,
           path: Path = VERDICTS_FILE) -> bool:
    """True when a recorded verdict passed this backend for this model and recipe."""
    verdict = read_verdicts(path).get(backend)
    return bool(verdict and verdict["passed"] and verdict["fingerprint"] == fingerprint
                and verdict["recipe"] == recipe)
