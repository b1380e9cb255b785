"""The engines lcplugin can run, one entry each: everything the rest of the suite asks about an engine.

Spec validation, the ``engine_*`` markers and their help, ``--lc-engine``'s accepted values, the
engine_args check, the quality settings (efficiency-only arguments), the load-time sizing, GPU
counting under pytest-xdist and the versions a run records all read this table, so a new engine is
its module plus one entry here. Engine modules are imported only when their engine is chosen (a
machine without vLLM never imports it), so an entry names its class as ``"module:Class"``.

Plugins and tests add engines with ``register_engine`` at import time (a ``-p`` plugin, or an
installed ``pytest11`` one): ``--lc-engine`` is checked when the command line is parsed, before any
``conftest.py`` is loaded.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import EngineError, LcError
from .prefill import STATIC_BUCKET


@dataclass(frozen=True, kw_only=True)
class EngineEntry:
    """One engine: how to import it, what it accepts, and what it costs."""

    name: str  # the spec's ``engine`` and ``--lc-engine`` value; the marker is ``engine_<name>``
    target: str  # "module:Class", imported in the engine worker only
    marker: str  # the ``engine_<name>`` marker's help text
    # the engine_args keys it reads (spec ``engine_args`` and ``--lc-engine-arg``): a typo is refused at
    # the start of a session, naming the keys it does accept
    engine_args: frozenset[str] = frozenset()
    # of those, the ones that change speed or memory, never what is scored (greedy output identical,
    # tested for the prefill chunk and the static cache): they do not block quality gates
    efficiency_only: frozenset[str] = frozenset()
    # loaded for one memory plan per context (vLLM's max_model_len), rather than once per model
    sized_by_context: bool = False
    # the engine_args key holding how many GPUs one model spans (tensor parallel), and the environment
    # variable that is its default; None: one GPU (or none)
    gpus_arg: str | None = None
    gpus_env: str | None = None
    # whether the memory the engine reports (what the preflight's estimate is checked against) holds the
    # forward's activations: vLLM's ``mem_used_gb`` counts its weights and the KV blocks a test held, while
    # its activations live in the pool it pre-allocates at load, so its estimate leaves them out
    counts_activations: bool = True
    # set in the engine's worker unless the user set them: torch's allocator grows in expandable segments,
    # since a long prompt's chunks leave blocks no later request fits (Zamba2 at 256k on the H200: out of
    # memory with 42.2 GiB reserved but unallocated); vLLM sizes its own pool and keeps torch's default
    environment: tuple[tuple[str, str], ...] = (("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),)
    # how the engine batches prompts, for the memory preflight: (size cap key, its default, token budget key, its
    # default); sequences long enough to be read in chunks run alone. None: one sequence at a time
    batching: tuple[str, int, str, int] | None = None
    # the engine allocates an attention model's KV cache per sequence in multiples of this many tokens (hf's static
    # cache), which the preflight counts; 0: the tokens themselves
    kv_bucket: int = 0
    extra: str = ""  # how to install what the engine imports, said when the import fails
    packages: tuple[str, ...] = ()  # distributions whose versions each run records

    def __post_init__(self) -> None:
        module, sep, cls = self.target.partition(":")
        if not self.name.isidentifier() or not sep or not module or not cls:
            raise LcError(f"engine entry {self.name!r}: name must be an identifier and target 'module:Class' "
                          f"(got {self.target!r}); fix the register_engine call")
        if not self.efficiency_only <= self.engine_args:
            raise LcError(f"engine entry {self.name!r}: efficiency_only names keys it does not accept "
                          f"({', '.join(sorted(self.efficiency_only - self.engine_args))}); add them to engine_args")

    def max_batch(self, engine_args: Mapping[str, Any]) -> int:
        """The spec's batch size cap (``batching``'s size key, else its default); 1 where the entry has none."""
        if self.batching is None:
            return int(engine_args.get("max_batch_size", 1))  # an engine that batches on its own terms
        size_key, size, _, _ = self.batching
        return int(engine_args.get(size_key, size))

    def batch(self, engine_args: Mapping[str, Any], tokens: int, chunked: bool, items: int | None = None) -> int:
        """Sequences of ``tokens`` the engine reads together at most (``batching``); one when chunked."""
        if self.batching is None or chunked:
            return 1
        size = self.max_batch(engine_args)
        budget = int(engine_args.get(self.batching[2], self.batching[3]))
        return max(1, min(size, budget // max(1, tokens), items if items else size))

    def gpus(self, engine_args: Mapping[str, Any]) -> int:
        """GPUs one model spans: its ``gpus_arg`` in engine_args, else ``gpus_env``, else 1.

        One place for the rule, because the engine sizes itself with it and the xdist controller gives
        each worker that many GPUs."""
        if self.gpus_arg is None:
            return 1
        default = os.environ.get(self.gpus_env, "1") if self.gpus_env else "1"
        return int(engine_args.get(self.gpus_arg, default))


# in registration order, which is the order of the versions a run records (summary.json run.versions)
BUILTIN_ENGINES = (
    EngineEntry(
        name="hf", target="lcplugin.engines.hf:HFEngine", marker="transformers engine",
        engine_args=frozenset({"device", "max_batch_size", "max_batch_tokens", "ignore_eos", "attn_implementation",
                               "prefill_chunk", "cache", "compile", "decode_attention", "decode_loop"}),
        efficiency_only=frozenset({"device", "max_batch_size", "max_batch_tokens", "prefill_chunk", "cache",
                                   "compile", "decode_attention", "decode_loop"}),
        batching=("max_batch_size", 1, "max_batch_tokens", 1 << 17), kv_bucket=STATIC_BUCKET,
        packages=("torch", "transformers")),
    EngineEntry(
        name="vllm", target="lcplugin.engines.vllm:VLLMEngine", marker="vLLM engine",
        engine_args=frozenset({"gpu_memory_utilization", "tensor_parallel_size", "ignore_eos", "prefill_chunk",
                               "max_num_seqs", "enforce_eager", "kv_cache_dtype", "swap_space", "cpu_offload_gb",
                               "block_size", "quantization", "max_model_len", "warmup"}),
        efficiency_only=frozenset({"gpu_memory_utilization", "tensor_parallel_size", "prefill_chunk", "max_num_seqs",
                                   "enforce_eager", "max_model_len", "warmup"}),
        sized_by_context=True, gpus_arg="tensor_parallel_size", gpus_env="LCPLUGIN_TP", counts_activations=False,
        environment=(), extra="pip install 'lcplugin[vllm]'", packages=("vllm",)),
    EngineEntry(
        name="mamba_ssm", target="lcplugin.engines.mamba_ssm:MambaSSMEngine", marker="mamba-ssm engine",
        engine_args=frozenset({"max_length", "ignore_eos", "prefill_chunk"}),
        efficiency_only=frozenset({"max_length", "prefill_chunk"}),
        extra="pip install 'lcplugin[mamba]' (needs CUDA)", packages=("mamba-ssm",)),
)
_ENGINES: dict[str, EngineEntry] = {entry.name: entry for entry in BUILTIN_ENGINES}


def register_engine(entry: EngineEntry) -> EngineEntry | None:
    """Add ``entry`` (replacing one of the same name); returns the entry it replaced, for an undo."""
    previous = _ENGINES.get(entry.name)
    _ENGINES[entry.name] = entry
    return previous


def unregister_engine(name: str) -> None:
    """Forget the engine ``name`` (a test's fake engine, once the test is over)."""
    _ENGINES.pop(name, None)


def registered_engines() -> list[str]:
    return sorted(_ENGINES)


def engine_entries() -> list[EngineEntry]:
    """The entries in registration order (built-ins first)."""
    return list(_ENGINES.values())


def engine_entry(name: str) -> EngineEntry:
    """The entry registered as ``name``; an unknown name is an error naming the known ones."""
    if name not in _ENGINES:
        raise EngineError(f"engine {name!r} is not available in this version of lcplugin; "
                          f"available: {', '.join(_ENGINES)}")
    return _ENGINES[name]


def engine_target(name: str) -> str:
    """The ``module:Class`` registered as ``name``.

    Resolved in the parent and handed to the worker, so an engine registered at run time (a test's
    fake engine, a plugin's own) reaches a spawned worker, whose registry is the module's default.
    """
    return engine_entry(name).target


def engine_class(name: str, target: str | None = None) -> type:
    """Import and return the engine class ``target`` (by default the one registered as ``name``)."""
    module_name, _, cls_name = (target or engine_target(name)).partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = _ENGINES[name].extra if name in _ENGINES else ""
        raise EngineError(f"engine {name!r} cannot be imported ({exc}); {hint}".rstrip("; ")) from exc
    return getattr(module, cls_name)


def check_engine_args(engine: str, args: Mapping[str, Any], where: str) -> None:
    """Refuse an engine_args key the engine does not read (``where`` names the spec file or option)."""
    if engine not in _ENGINES:
        return  # the test skips, naming the engines there are
    accepted = _ENGINES[engine].engine_args
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise LcError(f"{where}: engine {engine!r} does not accept {', '.join(map(repr, unknown))}; "
                      f"it accepts {', '.join(sorted(accepted))}")


def efficiency_only_args(engine: str) -> frozenset[str]:
    """The engine's arguments that change speed or memory only (none for an unknown engine)."""
    return _ENGINES[engine].efficiency_only if engine in _ENGINES else frozenset()


def engine_packages() -> list[str]:
    """Every registered engine's packages, once each, in registration order: the run's version list."""
    return list(dict.fromkeys(pkg for entry in _ENGINES.values() for pkg in entry.packages))
