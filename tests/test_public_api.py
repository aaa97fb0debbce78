"""The package's public surface: complete, sorted, and light to import."""

from __future__ import annotations

import subprocess
import sys

import retrieval


def test_all_is_sorted_and_every_name_resolves():
    assert retrieval.__all__ == sorted(retrieval.__all__)
    for name in retrieval.__all__:
        assert getattr(retrieval, name) is not None


def test_importing_the_package_loads_no_model_or_index_library():
    code = (
        "import sys, retrieval, retrieval.records, retrieval.errors; "
        "heavy = [m for m in ('torch', 'faiss', 'numpy', 'sentence_transformers') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
