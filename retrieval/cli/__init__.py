"""The `retrieval` command: the top layer, which nothing in the engine imports.

main (the parser, index, search, info, and subcommands plugged in through the
`retrieval.commands` entry points), shards (`retrieval shards`).
"""
