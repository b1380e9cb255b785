"""The engine seam: what every engine takes and returns (the engines themselves: ``registry``).

Prompts travel as token ids, never text: the token budget is then exact, nothing is re-tokenized,
and the same ids can be decoded for people by the ``prompt`` command. Timings are measured inside
the engine (the worker process), after a device synchronize, so the parent's scheduling and pickling
never leak into time-to-first-token or decode speed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


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


@dataclass
class Span:
    """The seconds a span set aside took (filled when it ends)."""

    seconds: float = 0.0


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

    @contextlib.contextmanager
    def outside(self) -> Iterator[Span]:
        """A span that is not the test's work: compiling, capturing or warming up a shape the test is the first
        to use. Timed after a synchronize; during a test its seconds come off the wall time (items/hour, the
        crossover) and its energy off the test's, and the summary reports it as ``warmup_s``."""
        from .telemetry import synchronize

        span, telemetry = Span(), self._telemetry
        mark = telemetry.mark() if telemetry is not None else None
        synchronize()
        start = time.perf_counter()
        try:
            yield span
        finally:
            synchronize()
            span.seconds = time.perf_counter() - start
            if telemetry is not None:
                telemetry.set_aside(span.seconds, mark)

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
