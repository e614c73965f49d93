"""neuralode's benchmarks: speed, NFE and memory against the reference and peer libraries.

Benchmarks measure; tests check correctness. Every benchmark compares side by side
in one process, reports medians over repeats after a warm-up, and writes JSON to
``benchmarks/results/``.
"""
