"""Strongroom's benchmarks (docs/benchmarks.md). ``bench.harness`` holds what they share.

Each benchmark runs from the repository root either as a script (``python bench/snapshot.py``, what
``make bench`` does) or as a module (``python -m bench.snapshot``).
"""
