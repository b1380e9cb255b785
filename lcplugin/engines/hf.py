"""The Hugging Face transformers engine: any ``AutoModelForCausalLM``, on CPU or CUDA.

Batched generation with left padding; batches are formed from prompts sorted by length under a
token budget (``max_batch_tokens``) and a size cap (``max_batch_size``), so long contexts run one at
a time while short ones share a batch. Time to first token is read, after one synchronize, when the
first token's logits reach the logits processors; decode time runs from there to the end.

A prompt longer than the prefill chunk (``engine_args.prefill_chunk``; automatic by default, see
:mod:`.prefill`) runs alone and is read chunk by chunk into one cache, then ``generate`` continues
from that cache; PG-19 windows are scored the same way.

Decoding (:mod:`.decode`): one-token attention over unrepeated KV heads by default
(``decode_attention``), and ``decode_loop='engine'`` for an own greedy loop over the same step.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from . import decode, fixes, prefill, telemetry
from .base import Completion, EngineConfig, EngineTelemetry, LogLikelihood, SamplingSettings
from .registry import engine_entry

_DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}


class _FirstTokenClock:
    """Marks the moment the first new token's logits exist (prefill done), synchronizing once.

    Used as a logits processor, it is called once per generated token; only the first call
    synchronizes the device, so decoding keeps its asynchronous pipeline (a streamer would copy
    every token to the host, a synchronize per token, and slow decoding by a third at 8k). It also
    serves as a mamba-ssm streamer (``put``), whose decoder copies each token to the host anyway.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.first_token_at: float | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.first_token_at is None:
            telemetry.synchronize()
            self.first_token_at = time.perf_counter()
        return scores

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2 and self.first_token_at is None:  # call 1 carries the prompt
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        pass


class HFEngine(EngineTelemetry):
    def __init__(self, config: EngineConfig) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        self.config = config
        args = dict(config.engine_args)
        self.device = args.pop("device", "cuda" if torch.cuda.is_available() else "cpu")
        entry = engine_entry("hf")  # the batch rule's keys and defaults live there: the memory preflight reads them
        assert entry.batching is not None
        self.max_batch_size = entry.max_batch(args)
        self.max_batch_tokens = int(args.pop(entry.batching[2], entry.batching[3]))
        args.pop(entry.batching[0], None)
        self.ignore_eos = bool(args.pop("ignore_eos", False))  # efficiency runs: always max_new_tokens
        attn = args.pop("attn_implementation", "sdpa" if self.device.startswith("cuda") else None)
        requested_chunk = args.pop("prefill_chunk", None)
        requested_cache, requested_compile = args.pop("cache", None), args.pop("compile", None)
        self.decode_attention = decode.choose_attention(args.pop("decode_attention", None))
        requested_loop = args.pop("decode_loop", None)
        common = {"revision": config.revision, "trust_remote_code": config.trust_remote_code}
        self.tokenizer = AutoTokenizer.from_pretrained(config.tokenizer, **common)
        model_config = AutoConfig.from_pretrained(config.source, **common)
        self.prefill_chunk, self.prefill_why = prefill.choose_chunk(model_config, self.device, requested_chunk)
        if config.rope:
            base = dict(getattr(model_config, "rope_parameters", None) or {})
            model_config.rope_parameters = {**base, **config.rope}
        dtype = getattr(torch, _DTYPES[config.dtype]) if config.dtype in _DTYPES else "auto"
        kwargs: dict[str, Any] = {"config": model_config, "dtype": dtype, **common, **args}
        if attn:
            kwargs["attn_implementation"] = attn
        try:
            self.model = AutoModelForCausalLM.from_pretrained(config.source, **kwargs)
        except (ValueError, ImportError) as exc:
            if attn and ("attn_implementation" in str(exc) or "sdpa" in str(exc).lower()):
                kwargs.pop("attn_implementation", None)
                self.model = AutoModelForCausalLM.from_pretrained(config.source, **kwargs)
            else:
                raise
        self.model.to(self.device).eval()
        self.model_fixes = fixes.apply(self.model)
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)
        self.cache_kind, self.compile, self.cache_why = prefill.choose_cache(
            self.model, self.device, requested_cache, requested_compile)
        self.decode_loop, self.decode_loop_why = decode.choose_loop(
            self.model, requested_loop, self.eos_ids, compiled=self.cache_kind == "static" and self.compile)
        self._static: tuple[tuple[int, int], Any] | None = None  # (batch, rows) -> the one static cache kept
        self._batch_counter = 0
        self.chunked_sequences = 0  # of the current test: proof in each summary that chunking happened
        if self.device.startswith("cuda"):  # CUDA context, cuBLAS handles, kernels: before any timing
            kind, self.cache_kind = self.cache_kind, "dynamic"  # no compile for a shape no test uses
            self._generate_batch([[self.pad_id] * 64], SamplingSettings(max_new_tokens=4))
            self.cache_kind, self._batch_counter = kind, 0

    # -- generation -------------------------------------------------------------------------
    def _batches(self, prompts: Sequence[Sequence[int]]) -> list[list[int]]:
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        batches: list[list[int]] = []
        for i in order:
            if batches:
                cur = batches[-1]
                longest = len(prompts[cur[0]])
                alone = 0 < self.prefill_chunk < longest  # chunked prefill reads one sequence
                if not alone and len(cur) < self.max_batch_size and (len(cur) + 1) * longest <= self.max_batch_tokens:
                    cur.append(i)
                    continue
            batches.append([i])
        return batches

    def _static_cache(self, batch: int, tokens: int) -> Any:
        """The static cache for ``batch`` sequences of up to ``tokens``, emptied; a new shape is compiled
        and warmed up here, before the caller's clock starts."""
        import torch
        from transformers import StaticCache

        key = (batch, prefill.static_length(tokens))
        if self._static is None or self._static[0] != key:
            self._static = None
            self.release()  # the previous shape's cache goes before the next is allocated
            cache = StaticCache(config=self.model.config, max_cache_len=key[1])
            self._static = (key, cache)
            if self.compile:
                ids = torch.full((batch, 8), self.pad_id, dtype=torch.long, device=self.device)
                # set aside (EngineTelemetry.outside): off the test's wall time and energy, reported as warmup_s
                with self.outside(), torch.inference_mode(), decode.attention(self.model, self.decode_attention):
                    if self.decode_loop == "engine":  # the step the engine loop calls, traced as it calls it
                        decode.greedy_decode(self.model, ids, torch.ones_like(ids), cache, max_new_tokens=3,
                                             eos_ids=(), pad_id=self.pad_id, step=self._step())
                    else:
                        self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=cache,
                                            max_new_tokens=3, min_new_tokens=3, do_sample=False,
                                            pad_token_id=self.pad_id)
        cache = self._static[1]
        with torch.inference_mode():  # its tensors were made under inference mode
            cache.reset()
        return cache

    def _step(self) -> Any:
        """One decode forward: the compiled call generate itself uses (shared, so one compile serves both
        loops) when the static cache is compiled, else the model."""
        if self.compile and self.cache_kind == "static":
            return self.model.get_compiled_call(self.model.generation_config.compile_config)
        return self.model.__call__

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingSettings) -> list[Completion]:
        out: dict[int, Completion] = {}
        for batch in self._batches(prompts):
            for i, c in zip(batch, self._generate_batch([prompts[i] for i in batch], sampling), strict=True):
                out[i] = c
        return [out[i] for i in range(len(prompts))]

    def _generate_batch(self, prompts: list[Sequence[int]], sampling: SamplingSettings) -> list[Completion]:
        import torch

        self._batch_counter += 1
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[row, width - len(p):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        chunked = len(prompts) == 1 and 0 < self.prefill_chunk < width
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens, "min_new_tokens": 1,
            "eos_token_id": None if self.ignore_eos else (self.eos_ids or None), "pad_token_id": self.pad_id,
            "num_beams": 1, "top_p": 1.0, "top_k": 0, **decode.NOT_APPLIED,
        }
        if sampling.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=sampling.temperature)
            torch.manual_seed(sampling.seed)
        cache = None
        if self.cache_kind == "static":
            cache = kwargs["past_key_values"] = self._static_cache(len(prompts), width + sampling.max_new_tokens)
            kwargs["disable_compile"] = not self.compile
        clock = _FirstTokenClock()
        telemetry.synchronize()
        start = time.perf_counter()
        engine_loop = self.decode_loop == "engine" and sampling.greedy
        with torch.inference_mode():
            if chunked:  # all but the last token into the cache; generate feeds only what is not cached
                _, cache = prefill.forward_chunks(self.model, ids[:, :-1], self.prefill_chunk, cache=cache)
                self.chunked_sequences += 1
                name = prefill.cache_argument(self.model)
                kwargs[name] = cache
                if name == "cache_params":  # Mamba-2's generate cannot tell how much is cached: the rest only
                    ids, mask = ids[:, -1:], mask[:, -1:]
                    width = 1
            with decode.attention(self.model, self.decode_attention):
                if engine_loop:
                    generated = decode.greedy_decode(
                        self.model, ids, mask, cache, max_new_tokens=sampling.max_new_tokens,
                        eos_ids=() if self.ignore_eos else self.eos_ids, pad_id=self.pad_id, step=self._step(),
                        prefilled=width - 1 if chunked else 0, on_first_token=lambda: clock(None, None))
                else:
                    generated = self.model.generate(input_ids=ids, attention_mask=mask, logits_processor=[clock],
                                                    **kwargs)[:, width:]
        telemetry.synchronize()
        end = time.perf_counter()
        first = clock.first_token_at or end
        completions = []
        for row, p in enumerate(prompts):
            new = generated[row].tolist()
            finish = "length"
            for j, tok in enumerate(new):
                if tok in self.eos_ids and not self.ignore_eos:
                    new, finish = new[: j + 1], "stop"
                    break
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            completions.append(Completion(
                text=text, prompt_tokens=len(p), output_tokens=len(new), output_ids=tuple(new),
                batch_id=self._batch_counter, batch_size=len(prompts),
                ttft_s=first - start, decode_s=end - first, finish_reason=finish))
        return completions

    # -- scoring ----------------------------------------------------------------------------
    def loglikelihood(self, tokens: Sequence[int], score_last: int) -> LogLikelihood:
        import torch

        if not 0 < score_last < len(tokens):
            raise ValueError(f"score_last={score_last} must be in 1..{len(tokens) - 1}")
        ids = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)
        telemetry.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            if 0 < self.prefill_chunk < len(tokens):
                logits = prefill.forward_chunks(self.model, ids, self.prefill_chunk, keep_last=score_last + 1)[0]
                self.chunked_sequences += 1
                logits = logits[:-1]
            else:
                try:
                    logits = self.model(input_ids=ids, logits_to_keep=score_last + 1).logits
                except TypeError:
                    logits = self.model(input_ids=ids).logits
                logits = logits[0, -(score_last + 1):-1].float()
            targets = ids[0, -score_last:]
            nll = torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
        telemetry.synchronize()
        return LogLikelihood(nll=float(nll), n_tokens=score_last, seconds=time.perf_counter() - start)

    def telemetry_begin(self) -> None:
        self.chunked_sequences = 0
        super().telemetry_begin()

    def describe(self) -> dict[str, Any]:
        path, why = decode.decode_path(self.model, self.cache_kind, self.compile, self.decode_loop,
                                       self.decode_attention)
        return {"prefill_chunk": self.prefill_chunk, "prefill_chunk_why": self.prefill_why,
                "prefill_chunked_sequences": self.chunked_sequences, "cache": self.cache_kind,
                "compile": self.compile, "cache_why": self.cache_why,
                "decode_attention": self.decode_attention, "decode_loop": self.decode_loop,
                "decode_loop_why": self.decode_loop_why, "decode_path": path, "decode_path_why": why,
                **({"generation_config_not_applied": left} if (left := decode.not_applied(self.model)) else {}),
                **({"model_fixes": self.model_fixes} if self.model_fixes else {})}

    def close(self) -> None:
        self.release("model")
