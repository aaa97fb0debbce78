"""Evaluation: retrieval quality on labelled data, and the quality guard.

scoring (runs, metrics through ranx, significance), datasets (BEIR and the other labelled
layouts), cli (`retrieval eval`), guard (`retrieval guard`: may a faster backend replace
torch?). Sits above the engine; the engine never imports it.
"""
