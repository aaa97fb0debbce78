"""Benchmarks of the engine (`retrieval bench`): tooling, never imported by the engine.

command (the `bench` command and its ingest benchmark), index (exact and approximate
indexes at scale), lexical (in-memory BM25 against FTS5), writes (bytes per write),
common (the BBC corpus, printing).
"""
