"""Search: from a query to ranked hits over anything that implements the read protocol.

options (`SearchOptions`: the one definition of the search options), retriever
(`Retriever`: dense, lexical and hybrid search), fusion (hybrid fusion), pool (deepening
the candidates for caps, collapsing and re-ranking), hits (candidates made into hits),
ranking (recency and date sorts), highlight (the best sentence of a hit), related
(articles like this one). Reads through `retrieval.collection.reading`, so one collection
and a sharded one rank alike. Never imports the cluster, evaluation, benchmarks or the CLI.
"""
