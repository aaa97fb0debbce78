"""Past one machine: a collection split into shards, served and indexed on Ray.

layout (shards.json: which shard holds an article, split and join), router
(`ShardedCollection`: writes to each article's shard, searches every shard in one round),
query_phase (what one shard answers for one search), sharded_reader (the read protocol
over the merged answers), statistics (collection-wide BM25 counts kept at the router),
groups_across (duplicate groups joined across shards), clients (how a shard is reached),
traffic (rounds counted), shard_server (one shard behind that narrow API), ray_index
(Ray Data indexing). Ray itself is imported only where it runs, never by a plain install.
"""
