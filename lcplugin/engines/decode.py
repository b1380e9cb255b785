"""Decode for the ``hf`` engine: attention that reads the KV cache once, and an engine-owned greedy loop.

**Attention (``engine_args.decode_attention``, default ``"gqa"``).** transformers' sdpa path repeats
the key/value heads (``repeat_kv``, ``integrations/sdpa_attention.py:108-112``) whenever a mask is
passed, because ``use_gqa_in_sdpa`` (``:30-37``) allows SDPA's ``enable_gqa`` on CUDA only without a
mask. A static cache always has a mask while decoding: ``create_causal_mask`` refuses the ``is_causal``
skip for a compilable cache at q == 1 (``masking_utils.py:953-955``) and ``StaticLayer.update``
returns all ``max_cache_len`` rows (``cache_utils.py:467-499``), so each layer of each token copies
the whole static cache group-times before SDPA reads it (verified on CPU: ``repeat_kv`` runs on the
full buffer at every decode step). A left-padded batch does the same on the dynamic cache. Repeating
costs 3.7x the GQA-native read at 128k on an H200 (issue 18's probe). During ``generate`` the models
on plain sdpa run through :func:`gqa_decode_attention`, registered with transformers' attention
interface: a one-token query goes to SDPA with ``enable_gqa=True`` and the same length mask;
everything else (prefill) is transformers' own sdpa, untouched, as is the chunked prefill.

**The loop (``engine_args.decode_loop``; automatic: ``"engine"`` over a compiled static cache where it can
decode the model, else ``"generate"``).** ``generate`` wraps each compiled
step in Python that rebuilds the 4D mask and position ids, runs the logits processors and reads
``unfinished.max() == 0`` on the host (``StopCheck``, ``generation/utils.py:375-391``): one
device-to-host synchronization per token on CUDA. :func:`greedy_decode` keeps everything on the
device (argmax, the mask row, positions, an end flag copied asynchronously and read only when it has
arrived), calling the same compiled step. Greedy only, and only where the generation config adds no
logits processor beyond ``min_new_tokens``. Measured on an H200 (``check_decode.py`` part e, the Llama-3.1-8B
shape, batch 1, static cache compiled, GQA attention): 176 tokens/s at 8k against 145 through ``generate``,
and 106 at 128k; so it is the default where it applies.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import EngineError
from .prefill import (
    HYBRID_STATIC_DEFAULT,
    MAMBA1_FAMILY,
    MAMBA2_FAMILY,
    attention_configs,
    cache_argument,
    static_cache_holds,
)

DECODE_ATTN = "lcplugin_decode_sdpa"
ATTENTIONS = ("gqa", "transformers")
LOOPS = ("generate", "engine")
_ALLOWED_PROCESSORS = frozenset({"MinNewTokensLengthLogitsProcessor"})  # the engine loop applies it itself
# Entries of a model's generation config that would add a logits processor to the suite's decoding, with the
# values that turn them off. The suite's sampling is the whole decoding, keyed in every result, and the vllm
# engine's offline API ignores a generation config: applied by hf alone (Qwen2.5's repetition_penalty 1.05),
# one model would be decoded two ways. hf passes these to generate; its summary names what it left out.
NOT_APPLIED = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0}


def not_applied(model: Any) -> dict[str, Any]:
    """The model's generation-config entries of NOT_APPLIED that would have acted."""
    gen = getattr(model, "generation_config", None)
    return {k: v for k, off in NOT_APPLIED.items() if (v := getattr(gen, k, None)) not in (None, off)}


# -- attention ------------------------------------------------------------------------------------
def gqa_decode_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                         scaling: float | None = None, is_causal: bool | None = None,
                         **kwargs: Any) -> tuple[Any, None]:
    """One query token over unrepeated key/value heads (``enable_gqa``) with transformers' own mask;
    any other call is transformers' sdpa unchanged."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = kwargs.get("position_bias") is None and kwargs.get("cache") is None
    if query.shape[2] != 1 or not plain or key.shape[-1] != value.shape[-1] or key.shape[-1] > 256:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=False,
        enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(DECODE_ATTN, gqa_decode_attention)
    AttentionMaskInterface.register(DECODE_ATTN, sdpa_mask)  # the very mask sdpa gets


def choose_attention(requested: Any) -> str:
    if requested is None:
        return "gqa"
    if requested not in ATTENTIONS:
        raise EngineError(f"engine_args decode_attention={requested!r}: accepted values are 'gqa' and 'transformers'")
    return str(requested)


@contextlib.contextmanager
def attention(model: Any, kind: str) -> Iterator[None]:
    """Within: the model's sdpa configs name :data:`DECODE_ATTN` (``kind == "gqa"``), else nothing changes.

    Swapped only around decoding, so the chunked prefill, which swaps ``"sdpa"`` for its own attention,
    still finds ``"sdpa"``; every decode (and each compile's warm-up) sees the same name, so a compiled
    step is traced once."""
    configs = [c for c in attention_configs(model) if getattr(c, "_attn_implementation_internal", None) == "sdpa"]
    if kind != "gqa" or not configs:
        yield
        return
    _register()
    try:
        for c in configs:
            c._attn_implementation_internal = DECODE_ATTN
        yield
    finally:
        for c in configs:
            c._attn_implementation_internal = "sdpa"


# -- what decoding runs, and why ------------------------------------------------------------------
def why_not_compiled(model: Any) -> str | None:
    """Why transformers' decode of this model cannot be compiled here; None for an attention model."""
    family = model.config.model_type
    if not getattr(model, "_can_compile_fullgraph", False):
        return f"transformers marks {family} not compilable (_can_compile_fullgraph is False)"
    if cache_argument(model) == "cache_params":
        return (f"{family} keeps its recurrent state in cache_params, a DynamicCache, and generate compiles only "
                "over a static cache; no captured decode for it here yet")
    if not static_cache_holds(model.config):
        return f"transformers' StaticCache has no fixed-shape layer for every layer type of {family}"
    if family in MAMBA2_FAMILY | MAMBA1_FAMILY and family not in HYBRID_STATIC_DEFAULT:
        return (f"{family} mixes Mamba state with KV layers; its static, compiled decode is opt-in "
                "(cache='static') until a GPU run measures it faster than the dynamic cache")
    return None


def decode_path(model: Any, cache: str, compiled: bool, loop: str, attn: str) -> tuple[str, str]:
    """(what one decode step runs, why): recorded in every summary, so a slow hybrid says what limits it."""
    step = f"{'compiled' if compiled else 'eager'} step over a {cache} cache"
    uses_gqa = attn == "gqa" and any(getattr(c, "_attn_implementation_internal", None) == "sdpa"
                                     for c in attention_configs(model))
    parts = [step, "GQA-native decode attention" if uses_gqa else "transformers' decode attention",
             "engine loop" if loop == "engine" else "generate loop"]
    blocker = why_not_compiled(model)
    if compiled:
        why = "cache='static' with compile"
    elif blocker:
        why = f"not compiled: {blocker}"
    else:
        why = "not compiled: transformers compiles decoding only over a static cache on CUDA (cache='static' opts in)"
    return ", ".join(parts), why


def extra_processors(model: Any, eos_ids: Sequence[int]) -> list[str] | None:
    """Logits processors generate would add for greedy decoding besides min_new_tokens, with NOT_APPLIED
    turned off as the engine does (a generation config may carry e.g. suppressed tokens); None when
    transformers cannot tell."""
    try:
        cfg, _ = model._prepare_generation_config(
            None, do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None, min_new_tokens=1,
            max_new_tokens=8, eos_token_id=list(eos_ids) or None, pad_token_id=0, **NOT_APPLIED)
        model._prepare_special_tokens(cfg, True, device=model.device)
        found = model._get_logits_processor(generation_config=cfg, input_ids_seq_length=8, device=model.device)
    except (AttributeError, TypeError, ValueError):  # private API: a transformers that moved it
        return None
    return [type(p).__name__ for p in found if type(p).__name__ not in _ALLOWED_PROCESSORS]


def _engine_loop_blocker(model: Any, eos_ids: Sequence[int]) -> str | None:
    """Why the engine loop cannot decode ``model`` (None: it can). It needs an attention model's
    ``past_key_values`` with one mask for all layers, and no logits processor it does not apply."""
    cfg = model.config
    family = cfg.model_type
    sliding = "sliding_attention" in (getattr(cfg, "layer_types", None) or []) or bool(
        getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True))
    if cache_argument(model) != "past_key_values" or family in MAMBA2_FAMILY | MAMBA1_FAMILY or sliding:
        return (f"model type {family!r}: the engine loop decodes models of full attention layers only "
                "(one mask for all)")
    extra = extra_processors(model, eos_ids)
    if extra is None or extra:
        what = ", ".join(extra) if extra else "transformers could not list them"
        return f"the model's generation config adds logits processors the engine loop does not apply ({what})"
    return None


def choose_loop(model: Any, requested: Any, eos_ids: Sequence[int], compiled: bool = False) -> tuple[str, str]:
    """(loop, why). Automatic: the engine loop over a compiled static-cache step where it can decode the
    model (measured on an H200: 176 tokens/s at 8k against 145 for generate over the same step), else generate."""
    if requested not in (None, *LOOPS):
        raise EngineError(f"engine_args decode_loop={requested!r}: accepted values are 'generate' and 'engine'")
    if requested == "generate":
        return "generate", "requested"
    blocker = _engine_loop_blocker(model, eos_ids)
    if requested is None:
        if not compiled:
            return "generate", "automatic: the engine loop runs by default over a compiled static cache only"
        if blocker:
            return "generate", f"automatic: {blocker}"
        return "engine", "automatic: compiled static cache; greedy batches (sampled ones use generate)"
    if blocker:
        raise EngineError(f"decode_loop='engine' refused: {blocker}; use decode_loop='generate'")
    return "engine", "requested: greedy batches; sampled ones use generate"


# -- the engine loop -------------------------------------------------------------------------------
class StopFlag:
    """Whether every row has ended, learnt without making the host wait for the device.

    On CUDA the flag is copied into pinned memory behind an event and read once the event has passed,
    a step or two late (those steps decode padding, cut off afterwards); on CPU, where nothing runs
    ahead of the host, it is read directly. ``event`` makes the deferred path testable without a GPU."""

    def __init__(self, device: Any, event: Callable[[], Any] | None = None) -> None:
        import torch

        cuda = device.type == "cuda"
        self.event = event or (torch.cuda.Event if cuda else None)
        self.host = torch.zeros((), dtype=torch.bool, pin_memory=cuda)
        self.pending: Any = None

    def ended(self, finished: Any) -> bool:
        if self.event is None:
            return bool(finished.all())
        if self.pending is not None:
            if not self.pending.query():
                return False
            self.pending = None
            if bool(self.host):
                return True
        self.host.copy_(finished.all(), non_blocking=True)
        self.pending = self.event()
        self.pending.record()
        return False


def greedy_decode(model: Any, ids: Any, mask: Any, cache: Any, *, max_new_tokens: int, eos_ids: Sequence[int],
                  pad_id: int, step: Callable[..., Any] | None = None, prefilled: int = 0,
                  on_first_token: Callable[[], None] | None = None, stop: StopFlag | None = None) -> Any:
    """Greedy tokens of ``generate(do_sample=False, min_new_tokens=1)`` for left-padded ``ids``/``mask``.

    ``cache``: a StaticCache (each step gets a fixed-shape 4D mask, so a compiled ``step`` is traced
    once) or None (a DynamicCache). ``prefilled``: prompt tokens already in ``cache`` (chunked prefill).
    Returns [batch, n] new tokens, n <= max_new_tokens; a row that ended carries ``pad_id`` after its
    end-of-sequence token, as generate pads it. With no ``eos_ids`` nothing is checked: no sync at all.
    """
    import torch
    from transformers import DynamicCache

    step = step or model.__call__
    batch, width = ids.shape
    device = ids.device
    static = cache is not None and not isinstance(cache, DynamicCache)
    cache = cache if cache is not None else DynamicCache(config=model.config)
    mask = mask.bool()
    pos = (mask.long().cumsum(-1) - 1).masked_fill(~mask, 0)
    out = model(input_ids=ids[:, prefilled:], attention_mask=mask, position_ids=pos[:, prefilled:],
                past_key_values=cache, use_cache=True, logits_to_keep=1)
    scores = out.logits[:, -1].float()
    del out
    eos = torch.tensor(list(eos_ids), dtype=torch.long, device=device) if eos_ids else None
    if eos is not None:
        scores[:, eos] = -math.inf  # min_new_tokens=1, as generate's MinNewTokensLengthLogitsProcessor
    token = scores.argmax(-1)
    tokens = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
    tokens[:, 0] = token
    if on_first_token is not None:
        on_first_token()
    finished = torch.isin(token, eos) if eos is not None else None
    stop = stop or StopFlag(device)
    if static:
        rows = max(getattr(layer, "max_cache_len", 0) for layer in cache.layers)
        valid = torch.zeros((batch, rows), dtype=torch.bool, device=device)
        valid[:, :width] = mask
    else:
        grown = torch.cat([mask, mask.new_ones((batch, max_new_tokens))], dim=1)
    position = pos[:, -1:] + 1
    done = max_new_tokens
    for t in range(1, max_new_tokens):
        where = width + t - 1  # the cache row of the token fed now
        if static:
            valid[:, where] = True
            attn = valid[:, None, None, :]
        else:
            attn = grown[:, :where + 1]
        out = step(input_ids=token[:, None], attention_mask=attn, position_ids=position, past_key_values=cache,
                   use_cache=True, return_dict=True)
        token = out.logits[:, -1].float().argmax(-1)
        del out
        if finished is not None:
            token = token.masked_fill(finished, pad_id)
            finished = finished | torch.isin(token, eos)
        tokens[:, t] = token
        position = position + 1
        if finished is not None and stop.ended(finished):
            done = t + 1
            break
    return tokens[:, :done]
