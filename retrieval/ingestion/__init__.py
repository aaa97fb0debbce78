"""Ingestion: sources in, `Article` records and their passages out.

loaders (seed files, folders, JSONL, BEIR, HTML pages, feeds, sitemaps), feeds and pages
(the web formats), chunking (paragraphs within the model's limit). Pure input handling:
imports only `retrieval.records` and `retrieval.errors`, never a model or the store.
"""
