"""Inference engines behind one small interface (``base.Engine``), loaded lazily by name (``registry``)."""

from .base import Completion, EngineConfig, LogLikelihood, SamplingSettings
from .registry import EngineEntry, engine_class, register_engine, registered_engines

__all__ = [
    "Completion", "EngineConfig", "EngineEntry", "LogLikelihood", "SamplingSettings", "engine_class",
    "register_engine", "registered_engines",
]
