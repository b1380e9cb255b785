"""Chunked prefill for the ``hf`` engine: a long prompt read in pieces into one cache.

Why: one forward over 128k tokens (a) overflows the 32-bit offsets of mamba-ssm's SSD kernels past
about 2^31 / d_in_proj tokens (Nemotron-H-8B, Codestral: ~115.7k) - they crash or, worse, return
wrong output - and (b) holds activations for every token at once (Llama-3.1-8B at 128k: 48.9 GB
torch peak on an H200, where weights plus KV cache need ~34 GB). Reading the prompt in chunks, each
continuing from the cache the previous ones filled, avoids both.

transformers' own chunking (``prefill_chunk_size``) is slow for attention: a chunk of q tokens
over kv > q cached keys gets a q x kv mask from the sdpa path, which leaves the fast causal kernel
(H200, 130,944 tokens: 16k chunks 21.4 s against 11.6 s for one forward). So during a batch-1
chunked prefill the model's attention runs through :func:`chunk_attention`, which builds no mask:
q == kv is SDPA's ``is_causal``; q == 1 needs none; otherwise ``causal_lower_right(q, kv)``, which
SDPA dispatches to flash attention on CUDA (lower-right alignment is flash's native causal).

Which families may be chunked: a forward of several tokens must continue from the cache. Attention
models do; the Mamba-2 family (mamba2, nemotron_h, zamba2, bamba, falcon_h1) feeds the cached conv
window and SSM state into the next chunk's scan. Mamba-1 mixers (mamba, falcon_mamba, jamba) carry
the conv window but start each multi-token scan from zero state; while chunking, their scans are
continued from the cached state by :func:`.mamba1_carry.carried_scans` (the scan is linear in it).
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Iterator
from typing import Any

from ..errors import EngineError
from . import mamba1_carry
from .layouts import CHUNK_MARGIN, SSD_CHUNK, ssd_token_limit

# Automatic chunk for attention models on CUDA, chosen by measurement (H200, BENCHMARKS.md): Llama-3.1-8B
# at 130,944 tokens, 8k / 16k / 32k chunks: 12.34 / 11.87 / 11.56 s, 34.2 / 35.2 / 37.2 GB; 16k is the
# fastest that stays under 36 GB.
ATTENTION_CHUNK = 16384
MAMBA1_FAMILY = frozenset({"mamba", "falcon_mamba", "jamba"})  # scans continued by mamba1_carry
MAMBA2_FAMILY = frozenset({"mamba2", "nemotron_h", "zamba2", "bamba", "falcon_h1"})
_ATTN_NAME = "lcplugin_chunked_sdpa"


def ssd_width(config: Any) -> int | None:
    """d_in_proj = 2*d_inner + 2*n_groups*d_state + n_heads, read from each family's config names."""
    t = config.model_type
    h = config.hidden_size
    if t == "mamba2":
        d_inner, groups, state, heads = int(config.expand * h), config.n_groups, config.state_size, config.num_heads
    elif t == "nemotron_h":
        d_inner = config.mamba_num_heads * config.mamba_head_dim
        groups, state, heads = config.n_groups, config.ssm_state_size, config.mamba_num_heads
    elif t == "zamba2":
        d_inner = int(config.mamba_expand * h)
        groups, state, heads = config.mamba_ngroups, config.mamba_d_state, config.n_mamba_heads
    elif t == "bamba":
        d_inner = int(config.mamba_expand * h)
        groups, state, heads = config.mamba_n_groups, config.mamba_d_state, config.mamba_n_heads
    elif t == "falcon_h1":
        d_inner = getattr(config, "mamba_d_ssm", None) or int(config.mamba_expand * h)
        groups, state, heads = config.mamba_n_groups, config.mamba_d_state, config.mamba_n_heads
    else:
        return None
    return 2 * d_inner + 2 * groups * state + heads


def mamba1_width(config: Any) -> int | None:
    """The Mamba-1 in_proj width, 2*d_inner (Mamba-2.8B, Jamba-Reasoning-3B: 10,240)."""
    t = config.model_type
    if t in ("mamba", "falcon_mamba"):
        return 2 * int(config.intermediate_size)
    if t == "jamba":
        return 2 * int(config.mamba_expand * config.hidden_size)
    return None


def kernel_token_limit(config: Any) -> int | None:
    """Longest safe forward for mamba-ssm's SSD kernels (int32 offsets into the in_proj output),
    with a margin; None for models without those kernels."""
    width = ssd_width(config)
    return None if width is None else ssd_token_limit(width)


def choose_chunk(config: Any, device: str, requested: Any) -> tuple[int, str]:
    """The prefill chunk (0 = one forward) and why; refuses a negative chunk."""
    if requested is not None:
        chunk = int(requested)
        if chunk < 0:
            raise EngineError(f"engine_args prefill_chunk={requested!r}: must be 0 (one forward) or a token count")
        return chunk, "requested" if chunk else "requested: one forward"
    if not device.startswith("cuda"):
        return 0, "automatic: one forward on CPU"
    width = mamba1_width(config)
    if width is not None:  # issue 16: Mamba-2.8B's in_proj output passes 2^31 elements at about 209k tokens
        return ssd_token_limit(width), (f"automatic: keeps the Mamba-1 in_proj output ({width} per token) under "
                                        f"2^31 elements, with a margin of {CHUNK_MARGIN:g}; scans carried across chunks")
    limit = kernel_token_limit(config)
    if limit is not None:
        return limit, (f"automatic: mamba-ssm SSD kernels overflow int32 past 2^31/{ssd_width(config)} tokens; "
                       f"{CHUNK_MARGIN:g} of that, a multiple of {SSD_CHUNK}")
    return ATTENTION_CHUNK, "automatic: attention model on CUDA, ATTENTION_CHUNK keeps the activation peak small"


# -- attention without masks during batch-1 chunked prefill -----------------------------------------
_STATE = threading.local()  # kv_len: keys filled so far (a static cache holds more rows than that)


def _cudnn_lse(query: Any, key: Any, value: Any, causal: bool, scale: float | None) -> tuple[Any, Any]:
    import torch

    out = torch.ops.aten._scaled_dot_product_cudnn_attention(query, key, value, None, True, 0.0, causal, False,
                                                              scale=scale)
    return out[0], out[1]


def _flash_lse(query: Any, key: Any, value: Any, causal: bool, scale: float | None) -> tuple[Any, Any]:
    import torch

    out = torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, 0.0, causal, False, scale=scale)
    return out[0], out[1]


_LSE_KERNELS = {"cudnn": _cudnn_lse, "flash": _flash_lse}
_CHOSEN: dict[tuple, str | None] = {}  # (dtype, heads, kv heads, head dim) -> the kernel that proved exact


def _split(kernel: str, query: Any, key: Any, value: Any, scale: float | None) -> Any:
    """Lower-right causal attention as two square-or-full calls merged by their log-sum-exps.

    The q queries are the last q of kv positions: they see every earlier key (no mask at all) and
    their own block causally (a square, top-left = lower-right). Both are the shapes the fast kernels
    are made for; the SDPA bias path and flash's own lower-right causal took 0.40 s per layer over a
    131k prefill in 16k chunks against 0.23 s for one causal call (H200, BENCHMARKS.md).
    """
    import torch

    fn = _LSE_KERNELS[kernel]
    q, kv = query.shape[2], key.shape[2]
    s = kv - q
    out_a, lse_a = fn(query, key[:, :, :s], value[:, :, :s], False, scale)
    out_b, lse_b = fn(query, key[:, :, s:], value[:, :, s:], True, scale)
    lse_a = lse_a.reshape(query.shape[:3]).float()
    lse_b = lse_b.reshape(query.shape[:3]).float()
    top = torch.maximum(lse_a, lse_b)
    w_a, w_b = torch.exp(lse_a - top).unsqueeze(-1), torch.exp(lse_b - top).unsqueeze(-1)
    return ((out_a.float() * w_a + out_b.float() * w_b) / (w_a + w_b)).to(query.dtype)


def _lower_right_cuda(query: Any, key: Any, value: Any, scale: float | None) -> Any:
    """The fastest split kernel that reproduces masked attention on this device, checked once per head
    layout on a small problem (a kernel that refuses GQA, or returns its log-sum-exp in another form,
    is passed over); None when none does, and the caller falls back to SDPA's bias path."""
    import torch
    from torch.nn.attention.bias import causal_lower_right

    layout = (query.dtype, query.shape[1], key.shape[1], query.shape[3])
    if layout not in _CHOSEN:
        _CHOSEN[layout] = None
        gen = torch.Generator(device=query.device).manual_seed(0)
        shape = (1, query.shape[1], 256, query.shape[3])
        tq = torch.randn(shape, device=query.device, dtype=query.dtype, generator=gen)
        tk = torch.randn((1, key.shape[1], 768, key.shape[3]), device=query.device, dtype=query.dtype, generator=gen)
        tv = torch.randn(tk.shape, device=query.device, dtype=query.dtype, generator=gen)
        groups = query.shape[1] // key.shape[1]
        ref = torch.nn.functional.scaled_dot_product_attention(
            tq.float(), tk.float().repeat_interleave(groups, 1), tv.float().repeat_interleave(groups, 1),
            attn_mask=causal_lower_right(256, 768))
        for name in _LSE_KERNELS:
            try:
                got = _split(name, tq, tk, tv, None).float()
            except (RuntimeError, NotImplementedError, AttributeError):
                continue
            if got.shape == ref.shape and (got - ref).abs().max().item() < 2e-2:
                _CHOSEN[layout] = name
                break
    kernel = _CHOSEN[layout]
    return _split(kernel, query, key, value, scale) if kernel else None


def chunk_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                    scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any) -> tuple[Any, None]:
    """SDPA for one sequence whose queries are the last q of kv positions (no mask tensor)."""
    import torch
    from torch.nn.attention.bias import causal_lower_right

    kv_len = getattr(_STATE, "kv_len", None)
    if kv_len is not None and key.shape[2] > kv_len:
        key, value = key[:, :, :kv_len], value[:, :, :kv_len]
    q, kv = query.shape[2], key.shape[2]
    if 1 < q < kv and query.is_cuda and query.dtype in (torch.float16, torch.bfloat16):
        out = _lower_right_cuda(query, key, value, scaling)
        if out is not None:
            return out.transpose(1, 2).contiguous(), None
    mask = causal_lower_right(q, kv) if 1 < q < kv else None
    gqa = query.shape[1] != key.shape[1]
    if gqa and mask is not None:  # the bias path takes no GQA: repeat the key/value heads
        groups = query.shape[1] // key.shape[1]
        key, value, gqa = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1), False
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=q == kv and q > 1, scale=scaling,
        enable_gqa=gqa)
    return out.transpose(1, 2).contiguous(), None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    return None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(_ATTN_NAME, chunk_attention)
    try:
        from transformers.masking_utils import AttentionMaskInterface

        AttentionMaskInterface.register(_ATTN_NAME, _no_mask)
    except ImportError:  # older transformers: a name without a mask function builds no mask either
        pass


def attention_configs(model: Any) -> list[Any]:
    """Every config in the model that carries an attention implementation (nested text or decoder
    configs included): what switching the attention must set, and what a check must read."""
    seen: dict[int, Any] = {id(model.config): model.config}
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            seen.setdefault(id(cfg), cfg)
        for sub in ("text_config", "decoder"):
            inner = getattr(cfg, sub, None) if cfg is not None else None
            if inner is not None and hasattr(inner, "_attn_implementation"):
                seen.setdefault(id(inner), inner)
    return list(seen.values())


def uses_chunk_attention(model: Any) -> bool:
    """Only models on plain sdpa without sliding windows swap in :func:`chunk_attention`; others keep
    transformers' masks (correct with an offset, just slower)."""
    cfg = model.config
    layer_types = getattr(cfg, "layer_types", None) or []
    return (getattr(cfg, "_attn_implementation", None) == "sdpa" and "sliding_attention" not in layer_types
            and not getattr(cfg, "use_sliding_window", False))


@contextlib.contextmanager
def _chunk_attention(model: Any) -> Iterator[None]:
    if not uses_chunk_attention(model):
        yield
        return
    _register()
    configs = attention_configs(model)
    saved = [getattr(c, "_attn_implementation_internal", None) for c in configs]
    try:
        for c in configs:
            if getattr(c, "_attn_implementation_internal", None) == "sdpa":
                c._attn_implementation_internal = _ATTN_NAME
        yield
    finally:
        for c, s in zip(configs, saved, strict=True):
            c._attn_implementation_internal = s
        _STATE.kv_len = None


# -- the chunk loop ------------------------------------------------------------------------------------
def cache_argument(model: Any) -> str:
    """The forward's name for the cache: ``cache_params`` (Mamba, Mamba2) or ``past_key_values``."""
    params = inspect.signature(model.forward).parameters
    return "cache_params" if "cache_params" in params and "past_key_values" not in params else "past_key_values"


def forward_chunks(model: Any, ids: Any, chunk: int, keep_last: int = 1, cache: Any = None) -> tuple[Any, Any]:
    """Read ``ids`` (1 x L) in forwards of ``chunk`` tokens into one cache.

    Returns (logits of the last ``keep_last`` positions, float32 [keep_last, vocab]; the cache).
    Each forward computes logits only for its positions inside that tail.
    """
    import torch

    if ids.shape[0] != 1:
        raise ValueError("chunked prefill runs one sequence at a time")
    total = ids.shape[1]
    params = inspect.signature(model.forward).parameters
    name = cache_argument(model)
    kept: list[Any] = []
    tail_start = total - keep_last
    with _chunk_attention(model), mamba1_carry.carried_scans(model):
        for start in range(0, total, chunk):
            end = min(start + chunk, total)
            want = end - max(start, tail_start) if end > tail_start else 0
            kwargs: dict[str, Any] = {"input_ids": ids[:, start:end], "use_cache": True, "logits_to_keep": max(want, 1)}
            if cache is not None:
                kwargs[name] = cache
            positions = torch.arange(start, end, device=ids.device)
            if "position_ids" in params:
                kwargs["position_ids"] = positions[None]
            if "cache_position" in params:
                kwargs["cache_position"] = positions
            _STATE.kv_len = end
            out = model(**kwargs)
            cache = getattr(out, name, None)
            if cache is None:
                cache = getattr(out, "past_key_values", None) or getattr(out, "cache_params", None)
            if want:
                kept.append(out.logits[0, -want:].float())
            del out
    return torch.cat(kept, dim=0), cache


# -- the decode cache: static (allocated once, compilable) or dynamic ----------------------------------
# a static cache holds prompt + new tokens rounded up to this: few shapes, few compiles (the registry's hf entry
# passes it on to the memory preflight as its kv_bucket)
STATIC_BUCKET = 4096


def static_length(tokens: int) -> int:
    """Cache rows for ``tokens``: a multiple of STATIC_BUCKET, so a suite's prompts cut at a context
    share one shape, while a cache far longer than needed (every decode step reads all of it) is avoided."""
    return -(-tokens // STATIC_BUCKET) * STATIC_BUCKET


# Hybrids whose transformers StaticCache holds every layer (KV rows for attention, fixed conv and SSM states for
# Mamba) and whose forward transformers marks compilable can decode through a static, compiled step; it is their
# default on CUDA once a GPU run measured it faster than the dynamic cache. H200, 2026-12-01, the suite side by
# side (LongBench-v2, batch 1, random bf16 weights; BENCHMARKS.md, session 10), decode tokens/s at 8k / 128k:
# Jamba-Reasoning-3B 12.2 / 12.9 dynamic, 207.7 / 207.8 static; Nemotron-H-8B 12.7 / 13.7 and 146.5 / 139.8.
# Others (bamba, falcon_h1) stay opt-in (cache='static') until measured.
HYBRID_STATIC_DEFAULT: frozenset[str] = frozenset({"jamba", "nemotron_h"})


def static_cache_holds(config: Any) -> bool:
    """Whether transformers' StaticCache has a fixed-shape layer for every layer type of ``config``."""
    try:
        from transformers.cache_utils import STATIC_LAYER_TYPE_MAPPING, get_layer_types_and_kwargs
    except ImportError:  # an older transformers: no hybrid static cache
        return config.model_type not in MAMBA2_FAMILY | MAMBA1_FAMILY
    layer_types, _ = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
    return all(t in STATIC_LAYER_TYPE_MAPPING for t in layer_types)


def static_expected(family: str, requested: Any) -> bool:
    """Whether the engine allocates a static cache on CUDA (the preflight prices its rounded rows): the
    same rule as :func:`choose_cache`, from the model type alone."""
    if requested in ("static", "dynamic"):
        return requested == "static"
    return family not in MAMBA2_FAMILY | MAMBA1_FAMILY or family in HYBRID_STATIC_DEFAULT


def choose_cache(model: Any, device: str, cache: Any, compile_: Any) -> tuple[str, bool, str]:
    """(cache kind, compile, why). Static needs a model whose forward transformers compiles, with
    ``past_key_values`` (not Mamba's ``cache_params``) and a static layer for every layer type."""
    family = model.config.model_type
    supported = (bool(getattr(model, "_can_compile_fullgraph", False)) and cache_argument(model) == "past_key_values"
                 and static_cache_holds(model.config))
    hybrid = family in MAMBA2_FAMILY | MAMBA1_FAMILY
    cuda = device.startswith("cuda")
    if cache not in (None, "static", "dynamic"):
        raise EngineError(f"engine_args cache={cache!r}: accepted values are 'static' and 'dynamic'")
    if compile_ is not None and not isinstance(compile_, bool):
        raise EngineError(f"engine_args compile={compile_!r}: accepted values are true and false")
    if cache == "static" and not supported:
        raise EngineError(f"cache='static' refused for model type {family!r}: transformers has no static, compilable "
                          "cache for it (its forward is not marked compilable, or a layer type has no static layer); "
                          "use cache='dynamic'")
    # The default on CUDA since it was measured (H200, 2026-12-01, scripts/gpu/check_decode.py part e, the
    # Llama-3.1-8B shape, batch 1: 176 tokens/s at 8k and 106 at 128k with the engine loop, against 13.5-17.5
    # with the dynamic cache; the hybrids above); on CPU transformers compiles nothing, so the static cache would
    # only cost memory.
    automatic = cuda and supported and static_expected(family, None)
    kind = cache or ("static" if automatic else "dynamic")
    if compile_ and kind != "static":
        raise EngineError("compile=true needs cache='static' (transformers compiles decoding only over a static cache)")
    if compile_ and not cuda:
        raise EngineError(f"compile=true refused on {device!r}: transformers compiles generation on CUDA only")
    compiled = bool(compile_) if compile_ is not None else (kind == "static" and cuda)
    if cache:
        why = "requested"
    elif not cuda:
        why = "automatic: CPU"
    elif automatic:
        why = "automatic: static and compiled on CUDA (measured faster on an H200); cache='dynamic' opts out"
    elif supported and hybrid:
        why = (f"automatic: {family}'s static, compiled decode is opt-in (cache='static') until a GPU run "
               "measures it faster than the dynamic cache")
    else:
        why = f"automatic: {family} has no static, compilable cache here"
    return kind, compiled, why
