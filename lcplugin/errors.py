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
    """An engine failed to start or to run a request.

    ``str(exc)`` is the one-line cause; ``detail`` (the worker's log tail or traceback) travels apart so
    the plugin can show it as its own report section. Folded into the message it would be printed twice
    on CI, where pytest's short summary repeats the whole failure message.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class WorkerDied(EngineError):
    """The engine worker process died (crash, out of memory, CUDA error, killed)."""
