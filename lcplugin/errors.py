"""User-facing errors.

Everything a user can get wrong (a spec, a data file, an option, a baseline) raises ``LcError`` with
a message that names the culprit and the fix. The plugin and the CLI print that message alone,
without a traceback wall, because the traceback would only bury the one line that matters.
"""

from __future__ import annotations


class LcError(Exception):
    """A problem with the user's input or environment, explained in one message."""


class SpecError(LcError):
    """A model spec file is malformed or a model name is unknown."""


class DataError(LcError):
    """A data file is missing, unreadable, or an item lacks a field."""


class EngineError(LcError):
    """An engine failed to start or to run a request."""


class WorkerDied(EngineError):
    """The engine worker process died (crash, out of memory, CUDA error, killed)."""
