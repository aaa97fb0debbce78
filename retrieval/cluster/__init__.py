"""Past one machine: a collection split into shards, served and indexed on Ray.

layout (shards.json: which shard holds an article), router (`ShardedCollection`: reads
every shard and merges), shard_server (one shard behind a narrow API), ray_index (Ray
Data indexing). Ray itself is imported only where it runs, never by a plain install.
"""
