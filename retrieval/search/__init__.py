"""Search: from a query to ranked hits over anything that implements the read protocol.

retriever (`Retriever`, `SearchOptions`, dense, lexical and hybrid fusion), ranking
(recency and date sorts), highlight (the best sentence of a hit), related (articles like
this one). Reads through `retrieval.collection.reading`, so one collection and a sharded
one rank alike. Never imports the cluster, evaluation, benchmarks or the CLI.
"""
