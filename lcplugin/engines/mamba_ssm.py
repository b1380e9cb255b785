"""The mamba-ssm engine: ``MambaLMHeadModel`` with the fused CUDA kernels and CUDA-graph decoding.

Without these kernels an SSM is not measurable at long context: the transformers reference path for
Mamba-2 asked for 128 GiB at 8k tokens, and the Mamba-1 slow path ran 258 tokens/s at 2k. Loads
Mamba-1 and Mamba-2 checkpoints in mamba-ssm's format (``config.json`` with ``d_model``, ``n_layer``,
``ssm_cfg``) from a hub id or a local folder. Prompts run one at a time (mamba-ssm's decoder assumes
equal lengths in a batch). The CUDA graph is captured for a fixed maximum length per test, in a
warm-up call that is not timed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .. import telemetry
from ..errors import EngineError
from .base import Completion, EngineConfig, EngineTelemetry, LogLikelihood, SamplingSettings
from .hf import _FirstTokenClock


class MambaSSMEngine(EngineTelemetry):
    def __init__(self, config: EngineConfig) -> None:
        import torch

        try:
            from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
        except ImportError as exc:
            raise EngineError(f"the mamba_ssm engine needs the mamba-ssm package with its CUDA kernels ({exc}); "
                              "install it on a CUDA machine: pip install 'lcplugin[mamba]'") from None
        if not torch.cuda.is_available():
            raise EngineError("the mamba_ssm engine needs a CUDA device; none is visible")
        from transformers import AutoTokenizer

        self.config = config
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}.get(
            config.dtype, torch.bfloat16)
        self.model = MambaLMHeadModel.from_pretrained(config.source, device="cuda", dtype=dtype)
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(config.tokenizer, revision=config.revision)
        eos = self.tokenizer.eos_token_id
        self.eos_id = eos if eos is not None else 0
        self.max_length = int(dict(config.engine_args).get("max_length", 0)) or None
        self.ignore_eos = bool(dict(config.engine_args).get("ignore_eos", False))
        self._graph_length: int | None = None
        self._batch_counter = 0

    def _warm(self, max_length: int) -> None:
        """Capture the decoding CUDA graph for prompts up to ``max_length`` tokens, outside any timing
        (mamba-ssm re-captures only when a longer maximum is asked for), and compile the kernels."""
        import torch
        from mamba_ssm.utils.generation import update_graph_cache

        if self._graph_length is not None and self._graph_length >= max_length:
            return
        if self._graph_length is None:
            with torch.inference_mode():  # first call: Triton compiles and autotunes the prefill kernels
                self.model(torch.zeros((1, 2048), dtype=torch.long, device="cuda"), num_last_tokens=1)
        self.model._decoding_cache = update_graph_cache(
            self.model, getattr(self.model, "_decoding_cache", None), 1, 8, max_length)
        telemetry.synchronize()
        self._graph_length = max_length

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingSettings) -> list[Completion]:
        import torch

        longest = max(len(p) for p in prompts) + sampling.max_new_tokens
        # one graph per test: sized to the largest prompt the test can send (engine_args.max_length)
        max_length = max(self.max_length or 0, longest)
        self._warm(max_length)
        out = []
        for prompt in prompts:
            self._batch_counter += 1
            ids = torch.tensor([list(prompt)], dtype=torch.long, device="cuda")
            kwargs: dict[str, Any] = {"top_k": 1} if sampling.greedy else {
                "top_k": 0, "top_p": 0.0, "temperature": sampling.temperature}
            if not sampling.greedy:
                torch.manual_seed(sampling.seed)
            clock = _FirstTokenClock()
            telemetry.synchronize()
            start = time.perf_counter()
            with torch.inference_mode():
                seq = self.model.generate(input_ids=ids, max_length=len(prompt) + sampling.max_new_tokens,
                                          cg=True, eos_token_id=None if self.ignore_eos else self.eos_id,
                                          streamer=clock, **kwargs)
            telemetry.synchronize()
            end = time.perf_counter()
            new = seq[0, len(prompt):].tolist()
            finish = "length"
            if self.eos_id in new and not self.ignore_eos:
                new, finish = new[: new.index(self.eos_id) + 1], "stop"
            first = clock.first_token_at or end
            out.append(Completion(
                text=self.tokenizer.decode(new, skip_special_tokens=True), prompt_tokens=len(prompt),
                output_tokens=len(new), output_ids=tuple(new), batch_id=self._batch_counter, batch_size=1,
                ttft_s=first - start, decode_s=end - first, finish_reason=finish))
        return out

    def loglikelihood(self, tokens: Sequence[int], score_last: int) -> LogLikelihood:
        import torch

        ids = torch.tensor([list(tokens)], dtype=torch.long, device="cuda")
        telemetry.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            logits = self.model(ids, num_last_tokens=score_last + 1).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, ids[0, -score_last:], reduction="sum").item()
        telemetry.synchronize()
        return LogLikelihood(nll=float(nll), n_tokens=score_last, seconds=time.perf_counter() - start)

    def close(self) -> None:
        self.release("model")
