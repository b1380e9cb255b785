"""Model specs: one TOML file per model, parsed as data into a frozen ``ModelSpec``.

Specs ship in ``lcplugin/specs/``; users add or override them with ``--lc-specs DIR``. A spec never
executes code. Every problem names the file and the field, because a user with twenty spec files
must not have to guess which one is wrong.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from ..engines.registry import registered_engines
from ..errors import SpecError
from .contexts import parse_ctx

BUILTIN_SPECS = Path(__file__).parent.parent / "specs"
FAMILIES = ("transformer", "ssm", "hybrid")
DTYPES = ("bfloat16", "float16", "float32", "auto")
CHAT_MODES = ("auto", "on", "off")
DATA_DEFAULTS = ("hub", "synthetic")
DEFAULT_CONTEXTS = (4096, 8192, 16384, 32768, 65536, 131072)


@dataclass(frozen=True, kw_only=True)
class RopePolicy:
    """How to extend RoPE past the trained window for a requested context.

    ``factor = "auto"`` derives the factor from the test's context (ctx / original, at least 1), so
    nobody edits a config per context length. Scaling applies only when ctx exceeds ``original``.
    """

    type: Literal["yarn", "linear", "dynamic"]
    original_max_position_embeddings: int
    factor: float | Literal["auto"] = "auto"

    def resolve(self, ctx: int) -> dict[str, Any] | None:
        """The rope parameters to load the model with at ``ctx`` tokens, or None for native RoPE."""
        if ctx <= self.original_max_position_embeddings:
            return None
        factor = (
            ctx / self.original_max_position_embeddings if self.factor == "auto" else float(self.factor)
        )
        return {
            "rope_type": self.type,
            "factor": float(factor),
            "original_max_position_embeddings": self.original_max_position_embeddings,
        }


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Everything the suite needs to know to load and evaluate one model."""

    name: str
    source: str  # hub id, local path, or "builtin:<tiny-name>"
    family: Literal["transformer", "ssm", "hybrid"]
    engine: str
    # the longest context the model was trained (or its card says it was validated) at: past it a test
    # runs when asked for and is marked ``beyond_window``; running there is the experiment, not an error
    trained_window: int
    # where the architecture itself stops (a position scheme undefined beyond a length, e.g. learned
    # absolute positions): tests past it are skipped; None for RoPE, NoPE and SSM layers, which have none
    hard_limit: int | None = None
    dtype: str = "bfloat16"
    chat_template: Literal["auto", "on", "off"] = "auto"
    rope_scaling: RopePolicy | None = None
    trust_remote_code: bool = False
    engine_args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    tokenizer: str | None = None  # defaults to source
    revision: str | None = None
    requires_gpu: bool = False
    contexts: tuple[int, ...] = DEFAULT_CONTEXTS
    default_data: Literal["hub", "synthetic"] = "hub"
    description: str = ""
    path: str = ""  # the spec file, for messages
    legacy_max_context: bool = False  # written as the older ``max_context``: window and hard limit at once

    @property
    def is_builtin_tiny(self) -> bool:
        return self.source.startswith("builtin:")

    def rope_for(self, ctx: int) -> dict[str, Any] | None:
        return self.rope_scaling.resolve(ctx) if self.rope_scaling else None

    def beyond_window(self, ctx: int) -> bool:
        """Whether a test at ``ctx`` reads past the trained window (it runs, and is marked so)."""
        return ctx > self.trained_window

    def window_at(self, ctx: int) -> int:
        """The model's window as loaded for a test at ``ctx`` tokens: the trained window (or, with a
        RoPE policy, what the scaling applied at ``ctx`` reaches: the native window when none is
        applied), widened to ``ctx`` past it, and never beyond a hard limit.

        Ada-LEval fits its prompts to it (``Benchmark.context_window``), and vLLM is loaded with it:
        vLLM refuses a ``max_model_len`` beyond the (scaled) position embeddings, so the trained window
        would not load where a RoPE policy applies no scaling.
        """
        if self.rope_scaling is None:
            reach = self.trained_window
        else:
            rope = self.rope_for(ctx)
            native = self.rope_scaling.original_max_position_embeddings
            reach = native if rope is None else int(native * rope["factor"])
        window = max(reach, ctx)
        return window if self.hard_limit is None else min(window, self.hard_limit)


_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "name": (str, True),
    "source": (str, True),
    "family": (str, True),
    "engine": (str, True),
    "trained_window": ((int, str), False),  # required unless the older max_context is given
    "hard_limit": ((int, str), False),
    "max_context": ((int, str), False),
    "dtype": (str, False),
    "chat_template": (str, False),
    "rope_scaling": (dict, False),
    "trust_remote_code": (bool, False),
    "engine_args": (dict, False),
    "tokenizer": (str, False),
    "revision": (str, False),
    "requires_gpu": (bool, False),
    "contexts": (list, False),
    "default_data": (str, False),
    "description": (str, False),
}


def _fail(path: Path, fieldname: str, problem: str) -> SpecError:
    return SpecError(f"model spec {path}: field '{fieldname}' {problem}")


def _choice(path: Path, key: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise _fail(path, key, f"is {value!r}; use one of {', '.join(allowed)}")
    return value


def _ctx(path: Path, key: str, value: Any) -> int:
    try:
        return parse_ctx(value)
    except Exception as exc:
        raise _fail(path, key, f"is {value!r}, not a context length like 32768 or '32k'") from exc


def _rope(path: Path, raw: dict[str, Any]) -> RopePolicy:
    allowed = {"type", "original_max_position_embeddings", "factor"}
    for key in raw:
        if key not in allowed:
            raise _fail(path, f"rope_scaling.{key}", f"is not known; use {', '.join(sorted(allowed))}")
    kind = _choice(path, "rope_scaling.type", str(raw.get("type", "")), ("yarn", "linear", "dynamic"))
    if "original_max_position_embeddings" not in raw:
        raise _fail(path, "rope_scaling.original_max_position_embeddings", "is missing")
    original = _ctx(path, "rope_scaling.original_max_position_embeddings", raw["original_max_position_embeddings"])
    factor = raw.get("factor", "auto")
    if factor != "auto" and not (isinstance(factor, (int, float)) and factor >= 1):
        raise _fail(path, "rope_scaling.factor", f"is {factor!r}; use \"auto\" or a number >= 1")
    return RopePolicy(type=kind, original_max_position_embeddings=original, factor=factor)  # type: ignore[arg-type]


def _windows(path: Path, raw: Mapping[str, Any]) -> dict[str, Any]:
    """``trained_window`` and ``hard_limit``; an older spec's ``max_context`` is read as both, so it
    skips past it exactly as before (write ``trained_window`` to run past it instead)."""
    if "max_context" in raw:
        if "trained_window" in raw or "hard_limit" in raw:
            raise _fail(path, "max_context", "is the older form of trained_window + hard_limit; give "
                        "trained_window (and hard_limit only where the architecture has one), not both forms")
        limit = _ctx(path, "max_context", raw["max_context"])
        return {"trained_window": limit, "hard_limit": limit, "legacy_max_context": True}
    if "trained_window" not in raw:
        raise _fail(path, "trained_window", "is missing; give the context the model was trained at "
                    "(e.g. trained_window = \"128k\")")
    window = _ctx(path, "trained_window", raw["trained_window"])
    limit = _ctx(path, "hard_limit", raw["hard_limit"]) if "hard_limit" in raw else None
    if limit is not None and limit < window:
        raise _fail(path, "hard_limit", f"is {raw['hard_limit']!r}, below trained_window {raw['trained_window']!r}; "
                    "a hard limit is where the architecture stops, at or past the trained window")
    return {"trained_window": window, "hard_limit": limit}


def parse_spec(raw: Mapping[str, Any], path: Path) -> ModelSpec:
    """Validate one spec's data; every error names ``path`` and the field."""
    for key in raw:
        if key not in _FIELDS:
            raise _fail(path, key, f"is not a spec field; known fields: {', '.join(_FIELDS)}")
    for key, (kind, required) in _FIELDS.items():
        if key not in raw:
            if required:
                raise _fail(path, key, "is missing")
            continue
        if not isinstance(raw[key], kind) or (kind is not bool and isinstance(raw[key], bool)):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise _fail(path, key, f"has {type(raw[key]).__name__} {raw[key]!r}; expected {expected}")
    name = raw["name"]
    if not name or any(c.isspace() or c in "[]/" for c in name):
        raise _fail(path, "name", f"is {name!r}; use letters, digits, '-', '.' and '_' (it becomes a test id)")
    kwargs: dict[str, Any] = {k: raw[k] for k in ("name", "source", "trust_remote_code", "tokenizer",
                                                   "revision", "requires_gpu", "description") if k in raw}
    kwargs["family"] = _choice(path, "family", raw["family"], FAMILIES)
    kwargs["engine"] = _choice(path, "engine", raw["engine"], registered_engines())
    kwargs.update(_windows(path, raw))
    kwargs["dtype"] = _choice(path, "dtype", raw.get("dtype", "bfloat16"), DTYPES)
    kwargs["chat_template"] = _choice(path, "chat_template", raw.get("chat_template", "auto"), CHAT_MODES)
    kwargs["default_data"] = _choice(path, "default_data", raw.get("default_data", "hub"), DATA_DEFAULTS)
    if "rope_scaling" in raw:
        kwargs["rope_scaling"] = _rope(path, raw["rope_scaling"])
    if "contexts" in raw:
        kwargs["contexts"] = tuple(_ctx(path, "contexts", c) for c in raw["contexts"])
    kwargs["engine_args"] = MappingProxyType(dict(raw.get("engine_args", {})))
    return ModelSpec(path=str(path), **kwargs)


def load_spec_file(path: Path) -> ModelSpec:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"model spec {path}: not valid TOML ({exc}); fix the syntax") from exc
    except OSError as exc:
        raise SpecError(f"model spec {path}: cannot be read ({exc.strerror})") from exc
    return parse_spec(raw, path)


def load_specs(extra_dirs: Sequence[Path] = ()) -> dict[str, ModelSpec]:
    """Built-in specs, then each user folder's; a user spec replaces a built-in of the same name."""
    specs: dict[str, ModelSpec] = {}
    for folder in (BUILTIN_SPECS, *extra_dirs):
        if not folder.is_dir():
            raise SpecError(f"spec folder {folder} does not exist; pass an existing folder to --lc-specs")
        seen: dict[str, Path] = {}
        for path in sorted(folder.glob("*.toml")):
            spec = load_spec_file(path)
            if spec.name in seen:
                raise SpecError(
                    f"model spec {path}: field 'name' {spec.name!r} is also used by {seen[spec.name]}; "
                    "names must be unique"
                )
            seen[spec.name] = path
            specs[spec.name] = spec
    return specs


def select_specs(specs: Mapping[str, ModelSpec], names: str | None) -> list[ModelSpec]:
    """``--lc-models``: ``all`` (default) or a comma-separated list of names, in the given order."""
    if names is None or names.strip() in ("", "all"):
        return list(specs.values())
    chosen = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name not in specs:
            raise SpecError(
                f"--lc-models: unknown model {name!r}; known models: {', '.join(sorted(specs))} "
                "(add one with a spec file in a folder passed to --lc-specs)"
            )
        chosen.append(specs[name])
    return chosen
