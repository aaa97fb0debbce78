"""Benchmarks and load generators of the service: tooling, never imported by the service.

query (the service against a naive endpoint), live (searches under concurrent writers),
defaults (the issue's ratios with the default settings), cluster (Ray Serve against one
process), loadtest and live_load (the load generators they share).
"""
