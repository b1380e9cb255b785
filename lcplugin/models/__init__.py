"""Checkpoints the suite makes or finds: the built-in tiny models, random real-shape weights, the hub."""
