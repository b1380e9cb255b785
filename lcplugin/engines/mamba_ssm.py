"""The mamba-ssm engine: ``MambaLMHeadModel`` with the fused CUDA kernels and CUDA-graph decoding.

Without these kernels an SSM is not measurable at long context: the transformers reference path for
Mamba-2 asked for 128 GiB at 8k tokens, and the Mamba-1 slow path ran 258 tokens/s at 2k. Reads
Mistral's layout (``params.json`` + ``consolidated.safetensors``, e.g. Mamba-Codestral) and
mamba-ssm's own (``config.json`` with ``d_model`` + ``pytorch_model.bin``), from a hub id or a local
folder; any other layout is refused at load naming the engine that reads it (``layouts``).

Mamba-2 prompts are prefilled in chunks carrying conv and SSM state (``mamba_prefill``): one forward
past about 2^31 / d_in_proj tokens overflows mamba-ssm 2.3.2's Triton SSD kernels. Mamba-1 prompts
run one forward up to the chunk (the in_proj output under 2^31 elements: 188,672 tokens for
Mamba-2.8B) and past it are read in chunks too, each chunk's scan continued from the carried state
(``mamba1_carry``). Decoding then replays mamba-ssm's CUDA graph from that state, one token per
replay, greedy by argmax on the device; the host looks at the tokens every ``_EOS_EVERY`` steps only,
for the end-of-sequence token. Prompts run one at a time; the graph is captured in a warm-up call
that is not timed.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import EngineError
from . import layouts, telemetry
from .base import Completion, EngineConfig, EngineTelemetry, LogLikelihood, SamplingSettings

_EOS_EVERY = 16  # decode steps between host looks for the end-of-sequence token
_NLL_PIECE = 4096  # scored tokens per lm_head + cross-entropy piece (bounds the fp32 logits)


def _file(source: str, name: str, revision: str | None) -> Path:
    folder = Path(source)
    if folder.is_dir():
        return folder / name
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(source, name, revision=revision))


def load_model(source: str, revision: str | None, dtype: Any, layout: layouts.Layout, device: str = "cuda") -> Any:
    """``MambaLMHeadModel`` from a checkpoint in Mistral's or mamba-ssm's layout."""
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    layouts.require_layout("mamba_ssm", layout, source)
    if layout.name == "mamba_ssm":
        return MambaLMHeadModel.from_pretrained(source, device=device, dtype=dtype)
    from safetensors.torch import load_file

    params = json.loads(_file(source, "params.json", revision).read_text())
    model = MambaLMHeadModel(MambaConfig(**layouts.mistral_config(params)), device=device, dtype=dtype)
    state = layouts.map_mistral_keys(load_file(str(_file(source, "consolidated.safetensors", revision))))
    model.load_state_dict(state, strict=True)
    return model


class MambaSSMEngine(EngineTelemetry):
    def __init__(self, config: EngineConfig) -> None:
        import torch

        try:
            import mamba_ssm  # noqa: F401
        except ImportError as exc:
            raise EngineError(f"the mamba_ssm engine needs the mamba-ssm package with its CUDA kernels ({exc}); "
                              "install it on a CUDA machine: pip install 'lcplugin[mamba]'") from None
        if not torch.cuda.is_available():
            raise EngineError("the mamba_ssm engine needs a CUDA device; none is visible")
        self.config = config
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}.get(
            config.dtype, torch.bfloat16)
        # layout and tokenizer first: a checkpoint or tokenizer that cannot be read fails before 15 GB load
        self.layout = layouts.source_layout(config.source, config.revision)
        layouts.require_layout("mamba_ssm", self.layout, config.source)
        tokenizer = self._tokenizer(config)
        model = load_model(config.source, config.revision, dtype, self.layout)
        self._adopt(model, self.layout, config, tokenizer)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, config: EngineConfig) -> MambaSSMEngine:
        """An engine around a model already on the GPU (the GPU check builds random Codestral-shape
        weights in memory, without writing 15 GB to disk)."""
        engine = cls.__new__(cls)
        engine.config = config
        engine._adopt(model, layouts.Layout("in-memory", "a model built in this process"), config, tokenizer)
        return engine

    def _adopt(self, model: Any, layout: layouts.Layout, config: EngineConfig, tokenizer: Any) -> None:
        from .mamba_prefill import chunkable, cuda_kernels

        args = dict(config.engine_args)
        self.model, self.layout = model, layout
        self.model.eval()
        self.model_config = dataclasses.asdict(self.model.config)
        self.chunk, self.chunk_why = layouts.resolve_prefill_chunk(self.model_config, args.get("prefill_chunk"))
        self.mamba2 = layouts.ssm_kind(self.model_config) == "Mamba2"
        if self.chunk and not chunkable(self.model):
            raise EngineError(f"{config.model}: prefill_chunk={self.chunk} needs Mamba-2 or Mamba-1 layers only; "
                              "this model has other mixers (attention); set prefill_chunk=0")
        self.kernels = cuda_kernels()
        self.tokenizer = tokenizer if tokenizer is not None else self._tokenizer(config)
        eos = self.tokenizer.eos_token_id
        self.eos_id = eos if eos is not None else 0
        self.vocab_size = self.model_config["vocab_size"]
        self.max_length = int(args.get("max_length", 0)) or None
        self.ignore_eos = bool(args.get("ignore_eos", False))
        self._graph_length: int | None = None
        self._batch_counter = 0

    def _tokenizer(self, config: EngineConfig) -> Any:
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(config.tokenizer, revision=config.revision)
        except (OSError, ValueError) as exc:
            if self.layout.name == "mistral" and config.tokenizer == config.source:
                raise EngineError(
                    f"{config.model}: {config.source} ships Mistral's tokenizer.model.v3, which transformers' "
                    "AutoTokenizer does not read; set the spec's tokenizer to a transformers tokenizer of the same "
                    f"vocabulary (Mistral v3, e.g. mistralai/Mistral-7B-Instruct-v0.3 or a local folder) "
                    f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                ) from None
            raise

    def describe(self) -> dict[str, Any]:
        return {"prefill_chunk": self.chunk, "prefill_chunk_why": self.chunk_why, "checkpoint_layout": self.layout.name}

    def _check_forward(self, tokens: int) -> None:
        """Refuse, rather than return silently wrong output, one Mamba-2 forward past the int32 limit."""
        if not self.mamba2:
            return
        d_in_proj = layouts.mamba2_dims(self.model_config)["d_in_proj"]
        if tokens * d_in_proj >= layouts.INT32_LIMIT:
            raise EngineError(f"one forward of {tokens} tokens passes the int32 offset limit of mamba-ssm's SSD "
                              f"kernels (2^31/{d_in_proj} = {layouts.INT32_LIMIT // d_in_proj} tokens) and would "
                              "crash or be silently wrong; leave prefill_chunk out (automatic) or set it lower")

    def _warm(self, max_length: int) -> None:
        """Capture the decoding CUDA graph (mamba-ssm re-captures only for a longer maximum), and compile
        the prefill kernels, outside any timing."""
        import torch
        from mamba_ssm.utils.generation import update_graph_cache

        if self._graph_length is not None and self._graph_length >= max_length:
            return
        with self.outside():
            if self._graph_length is None:
                with torch.inference_mode():  # first call: Triton compiles and autotunes the prefill kernels
                    ids = torch.zeros((1, 2048), dtype=torch.long, device="cuda")
                    if self.chunk:
                        self._prefill(ids, 1)
                    self.model(ids, num_last_tokens=1)
            self.model._decoding_cache = update_graph_cache(
                self.model, getattr(self.model, "_decoding_cache", None), 1, 1, max_length)
        self._graph_length = max_length

    def _chunked(self, tokens: int) -> bool:
        """Mamba-2 always goes through the chunk loop; Mamba-1 only past its chunk (one forward below it,
        the path measured at 128k)."""
        return bool(self.chunk) and (self.mamba2 or self.chunk < tokens)

    def _prefill(self, ids: Any, keep_last: int) -> tuple[Any, list[tuple[Any, Any]] | None]:
        """Final hidden states of the last ``keep_last`` tokens, and the states to decode from (chunked);
        with one forward the states go straight into the decoding cache (None returned)."""
        from .mamba_prefill import chunked_prefill

        if self._chunked(ids.shape[1]):
            self._check_forward(min(self.chunk, ids.shape[1]))  # an explicit chunk past the limit
            return chunked_prefill(self.model, ids, self.chunk, keep_last, self.kernels)
        self._check_forward(ids.shape[1])
        params = self.model._decoding_cache.inference_params if self._graph_length else None
        if params is not None:
            params.reset(params.max_seqlen, 1)  # seqlen_offset 0: the mixers write their states into it
        hidden = self.model.backbone(ids, inference_params=params)
        return hidden[:, -keep_last:], None

    def _sample(self, logits: Any, sampling: SamplingSettings, generator: Any) -> Any:
        import torch

        logits = logits[..., : self.vocab_size].float()
        if sampling.greedy:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits / sampling.temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    def _generate_one(self, prompt: Sequence[int], sampling: SamplingSettings) -> Completion:
        import torch

        from .mamba_prefill import load_states

        cache = self.model._decoding_cache
        params = cache.inference_params
        generator = torch.Generator(device="cuda").manual_seed(sampling.seed)
        tokens = torch.zeros(max(1, sampling.max_new_tokens), dtype=torch.long, device="cuda")
        position = torch.zeros((1, 1), dtype=torch.long, device="cuda")
        ids = torch.tensor([list(prompt)], dtype=torch.long, device="cuda")
        telemetry.synchronize()
        start = time.perf_counter()
        hidden, states = self._prefill(ids, 1)
        if states is not None:
            load_states(params, states)
        del states
        tokens[0] = self._sample(self.model.lm_head(hidden[:, -1]), sampling, generator)[0]
        telemetry.synchronize()
        first = time.perf_counter()
        n, finish = 1, "length"
        params.seqlen_offset = len(prompt)
        while n < sampling.max_new_tokens:
            logits = cache.run(tokens[n - 1].view(1, 1), position, params.seqlen_offset)
            params.seqlen_offset += 1
            tokens[n] = self._sample(logits[:, -1], sampling, generator)[0]
            n += 1
            if not self.ignore_eos and n % _EOS_EVERY == 0 and bool((tokens[n - _EOS_EVERY:n] == self.eos_id).any()):
                break
        telemetry.synchronize()
        end = time.perf_counter()
        new = tokens[:n].tolist()
        if not self.ignore_eos and self.eos_id in new:
            new, finish = new[: new.index(self.eos_id) + 1], "stop"
        self._batch_counter += 1
        return Completion(
            text=self.tokenizer.decode(new, skip_special_tokens=True), prompt_tokens=len(prompt),
            output_tokens=len(new), output_ids=tuple(new), batch_id=self._batch_counter, batch_size=1,
            ttft_s=first - start, decode_s=end - first, finish_reason=finish)

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingSettings) -> list[Completion]:
        import torch

        longest = max(len(p) for p in prompts) + sampling.max_new_tokens
        # one graph per test: sized to the largest prompt the test can send (engine_args.max_length)
        self._warm(max(self.max_length or 0, longest))
        with torch.inference_mode():
            return [self._generate_one(prompt, sampling) for prompt in prompts]

    def loglikelihood(self, tokens: Sequence[int], score_last: int) -> LogLikelihood:
        """NLL of the last ``score_last`` tokens: the window prefilled in chunks like a prompt, logits
        computed only for the scored tail, a piece at a time."""
        import torch

        ids = torch.tensor([list(tokens)], dtype=torch.long, device="cuda")
        telemetry.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            if self._chunked(ids.shape[1]):
                hidden, _ = self._prefill(ids, score_last + 1)
            else:
                self._check_forward(ids.shape[1])
                hidden = self.model.backbone(ids)[:, -(score_last + 1):]
            hidden, targets = hidden[0, :-1], ids[0, -score_last:]
            nll = torch.zeros((), dtype=torch.float64, device="cuda")
            for i in range(0, score_last, _NLL_PIECE):
                logits = self.model.lm_head(hidden[i:i + _NLL_PIECE]).float()
                nll += torch.nn.functional.cross_entropy(logits, targets[i:i + _NLL_PIECE], reduction="sum")
            value = float(nll.item())
        telemetry.synchronize()
        return LogLikelihood(nll=value, n_tokens=score_last, seconds=time.perf_counter() - start)

    def close(self) -> None:
        self.release("model")
