"""Benchmark protocols, one module each, loaded lazily by name."""

from .base import BENCHMARKS, Benchmark, DataSource, EvalSession, Item, get_benchmark

__all__ = ["BENCHMARKS", "Benchmark", "DataSource", "EvalSession", "Item", "get_benchmark"]
