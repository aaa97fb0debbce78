"""The retrieval engine."""
