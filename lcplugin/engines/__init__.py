"""Inference engines behind one small interface (``base.Engine``), loaded lazily by name."""

from .base import Completion, EngineConfig, LogLikelihood, SamplingSettings, engine_class, registered_engines

__all__ = [
    "Completion", "EngineConfig", "LogLikelihood", "SamplingSettings", "engine_class", "registered_engines",
]
