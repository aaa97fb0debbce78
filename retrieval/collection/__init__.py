"""The collection engine: one directory, one source of truth, readers that never block.

store (SQLite: articles, passages, vectors, the change log; its parts by job in
store_connection, store_rows and store_log), manifest, index and
index_policy (FAISS), live_index and bm25 (kept in step with the log), checkpoint,
lexical, duplicates and groups (near-duplicate collapse), reading (the read protocol),
ingest (articles to stored passages), snapshot, and collection (`Collection`, which ties
them together; its parts by job in opened and checkpointing). Imports ingestion,
models, records and errors; never search or above.
"""
