"""The engine seam: what every engine takes and returns, and the lazy registry.

Prompts travel as token ids, never text: the token budget is then exact, nothing is re-tokenized,
and the same ids can be decoded for people by the ``prompt`` command. Timings are measured inside
the engine (the worker process), after a device synchronize, so the parent's scheduling and pickling
never leak into time-to-first-token or decode speed.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ..errors import EngineError, LcError

# name -> "module:Class". Modules are imported only when their engine is chosen, so a machine
# without vLLM or mamba-ssm never imports them.
_REGISTRY: dict[str, str] = {
    "hf": "lcplugin.engines.hf:HFEngine",
    "mamba_ssm": "lcplugin.engines.mamba_ssm:MambaSSMEngine",
    "vllm": "lcplugin.engines.vllm:VLLMEngine",
}
# The engine_args keys each engine reads (spec ``engine_args`` and ``--lc-engine-arg``): one home, so a
# typo is refused at the start of a session, naming the keys the engine does accept.
ENGINE_ARGS: dict[str, frozenset[str]] = {
    "hf": frozenset({"device", "max_batch_size", "max_batch_tokens", "ignore_eos", "attn_implementation",
                     "prefill_chunk", "cache", "compile"}),
    "mamba_ssm": frozenset({"max_length", "ignore_eos", "prefill_chunk"}),
    "vllm": frozenset({"gpu_memory_utilization", "tensor_parallel_size", "ignore_eos", "prefill_chunk",
                       "max_num_seqs", "enforce_eager", "kv_cache_dtype", "swap_space", "cpu_offload_gb",
                       "block_size", "quantization", "max_model_len"}),
}
# Of those, the ones that change speed or memory, never what is scored (greedy output identical, tested
# for the prefill chunk and the static cache): they do not block quality gates (runner.quality_settings).
EFFICIENCY_ONLY_ARGS = frozenset({"max_batch_size", "max_batch_tokens", "gpu_memory_utilization", "tensor_parallel_size",
                                  "device", "max_length", "prefill_chunk", "max_num_seqs", "max_num_batched_tokens",
                                  "enable_chunked_prefill", "enforce_eager", "cache", "compile", "max_model_len"})
# engines whose memory plan depends on the context length (a set: tests register fake engines); an explicit
# ``max_model_len`` engine arg fixes the plan instead, so one load serves every context up to it
SIZED_BY_CONTEXT: set[str] = {"vllm"}
_EXTRAS = {"vllm": "pip install 'lcplugin[vllm]'", "mamba_ssm": "pip install 'lcplugin[mamba]' (needs CUDA)"}


@dataclass(frozen=True, kw_only=True)
class SamplingSettings:
    """How to decode. ``temperature == 0`` means greedy; otherwise pure temperature sampling
    (top-p 1, top-k off), seeded per batch, whatever the model's own generation config says."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True, kw_only=True)
class Completion:
    """One prompt's output. Timings belong to the batch the prompt ran in (``batch_id``)."""

    text: str
    prompt_tokens: int
    output_tokens: int
    output_ids: tuple[int, ...] = ()
    batch_id: int = 0
    batch_size: int = 1
    ttft_s: float | None = None  # prefill + first token of the batch, after a synchronize
    decode_s: float | None = None  # from the first token to the last of the batch
    finish_reason: str = "length"  # "stop" (end-of-sequence token) or "length"


@dataclass(frozen=True, kw_only=True)
class LogLikelihood:
    """Summed negative log-likelihood (nats) of the last ``n_tokens`` tokens of a sequence."""

    nll: float
    n_tokens: int
    seconds: float | None = None


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Everything an engine needs to load a model; picklable, so it crosses into the worker."""

    engine: str
    model: str  # spec name, for messages
    source: str  # local folder or hub id
    tokenizer: str
    dtype: str = "bfloat16"
    revision: str | None = None
    trust_remote_code: bool = False
    rope: Mapping[str, Any] | None = None
    max_model_len: int | None = None
    engine_args: Mapping[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        """Equal keys mean one loaded engine can serve both configurations."""
        data = asdict(self)
        data["engine_args"] = dict(self.engine_args)
        data["rope"] = dict(self.rope) if self.rope else None
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Engine(Protocol):
    """What the suite asks of an inference engine."""

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingSettings) -> list[Completion]: ...

    def loglikelihood(self, tokens: Sequence[int], score_last: int) -> LogLikelihood: ...

    def telemetry_begin(self) -> None:
        """Reset peaks and start measuring (NVML sampler, energy counter) for one test."""
        ...

    def telemetry_end(self) -> dict[str, Any]:
        """Peaks and energy since ``telemetry_begin``; unmeasured figures None, ``why`` says why."""
        ...

    def describe(self) -> dict[str, Any]:
        """The settings the engine chose for itself (e.g. the prefill chunk), recorded in each summary."""
        ...

    def close(self) -> None: ...


class EngineTelemetry:
    """What every engine shares: per-test telemetry and giving device memory back on close."""

    _telemetry: Any = None
    # what peak_mem_gb holds under this engine, carried into every test's summary
    peak_mem_what = "the torch CUDA allocator's peak during this test: weights, KV cache and activations"

    def telemetry_begin(self) -> None:
        from .telemetry import TestTelemetry

        if self._telemetry is not None:  # the previous test failed before telemetry_end
            self._telemetry.stop()
        self._telemetry = TestTelemetry()
        self._telemetry.begin()

    def telemetry_end(self) -> dict[str, Any]:
        telemetry, self._telemetry = self._telemetry, None
        if telemetry is None:
            return {"why": {}, "peak_mem_what": self.peak_mem_what}
        return {**telemetry.end(), "peak_mem_what": self.peak_mem_what}

    def describe(self) -> dict[str, Any]:
        return {}

    def release(self, *attributes: str) -> None:
        """Drop the named attributes (model, engine) and return their device memory."""
        import gc

        from .telemetry import cuda_available

        for name in attributes:
            if hasattr(self, name):
                delattr(self, name)
        gc.collect()
        if cuda_available():
            import torch

            torch.cuda.empty_cache()


def tensor_parallel_size(engine_args: Mapping[str, Any]) -> int:
    """GPUs one vLLM model spans: the spec's ``tensor_parallel_size``, else ``LCPLUGIN_TP``, else 1.

    One place for the rule, because the engine sizes vLLM with it and the xdist controller gives
    each worker that many GPUs.
    """
    import os

    return int(engine_args.get("tensor_parallel_size", os.environ.get("LCPLUGIN_TP", "1")))


def check_engine_args(engine: str, args: Mapping[str, Any], where: str) -> None:
    """Refuse an engine_args key the engine does not read (``where`` names the spec file or option)."""
    accepted = ENGINE_ARGS.get(engine)
    if accepted is None:
        return
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise LcError(f"{where}: engine {engine!r} does not accept {', '.join(map(repr, unknown))}; "
                      f"it accepts {', '.join(sorted(accepted))}")


def registered_engines() -> list[str]:
    return sorted(_REGISTRY)


def engine_target(name: str) -> str:
    """The ``module:Class`` registered as ``name``.

    Resolved in the parent and handed to the worker, so an engine registered at run time (a test's
    fake engine, a plugin's own) reaches a spawned worker, whose registry is the module's default.
    """
    if name not in _REGISTRY:
        raise EngineError(
            f"engine {name!r} is not available in this version of lcplugin; available: {', '.join(_REGISTRY)}"
        )
    return _REGISTRY[name]


def engine_class(name: str, target: str | None = None) -> type:
    """Import and return the engine class ``target`` (by default the one registered as ``name``)."""
    module_name, _, cls_name = (target or engine_target(name)).partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = _EXTRAS.get(name, "")
        raise EngineError(f"engine {name!r} cannot be imported ({exc}); {hint}".rstrip("; ")) from exc
    return getattr(module, cls_name)
