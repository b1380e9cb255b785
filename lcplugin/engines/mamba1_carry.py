"""Mamba-1 selective scans continued from a carried state, so Mamba-1 prompts can be prefilled in chunks.

Why: one Mamba-1 forward holds the in_proj output, tokens x 2*d_inner elements (Mamba-2.8B: 10,240 per
token, past 2^31 at about 209k tokens), and neither mamba-ssm's ``selective_scan_fn`` nor transformers'
``mamba_selective_scan`` takes an initial state: every multi-token scan starts from zero. Reading a
long prompt in chunks therefore needs the chunk's scan continued from the previous chunk's final state.

The scan is linear in its initial state. Per channel d and state n, with delta = softplus(dt + bias)
and S_t = sum_{s<=t} delta_s, a scan started from h0 has

    h_t = h_t(zero start) + exp(A * S_t) * h0
    y_t = y_t(zero start) + silu(z_t) * sum_n C_t[n] * exp(A[d, n] * S_t[d]) * h0[d, n]

so the kernel runs unchanged from zero and :func:`add_initial_state` adds the second terms, in blocks
of tokens (the d x tokens x n decay factors never exist for a whole chunk at once). The convolution is
carried separately: its last d_conv - 1 inputs (transformers' cache concatenates them; mamba-ssm's
``causal_conv1d_fn`` takes them as ``initial_states``).

Two users: the ``hf`` engine (transformers' ``MambaMixer``, ``FalconMambaMixer``, ``JambaMambaMixer``,
through :func:`carried_scans`, which continues each multi-token scan from the state in the cache), and
the ``mamba_ssm`` engine's chunked prefill (:func:`mixer`, mamba-ssm's ``Mamba`` layer run on one chunk).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import EngineError

# transformers' Mamba-1 mixers whose multi-token forward with a cache calls the module-level
# ``mamba_selective_scan`` without an initial state (transformers 5.17-5.19)
HF_MIXERS = frozenset({"MambaMixer", "FalconMambaMixer", "JambaMambaMixer"})
# decay factors materialized per block: batch x d_inner x tokens x d_state float32 (512 MiB)
BLOCK_ELEMENTS = 1 << 27


def add_initial_state(y: Any, last: Any, h0: Any, delta: Any, A: Any, C: Any, z: Any = None,
                      delta_bias: Any = None, delta_softplus: bool = False) -> tuple[Any, Any]:
    """A zero-start selective scan's output ``y`` (b, d, L) and final state ``last`` (b, d, n), turned
    into those of the same scan started from ``h0`` (b, d, n).

    Arguments as ``selective_scan_fn`` takes them: ``delta`` (b, d, L) before bias and softplus, ``A``
    (d, n), ``C`` (b, n, L), gate ``z`` (b, d, L) or None. ``y`` is updated in place and returned.
    """
    import torch
    import torch.nn.functional as F

    batch, d_inner, length = delta.shape
    n = A.shape[-1]
    A32, h0 = A.float(), h0.float()
    cum = torch.zeros((batch, d_inner), dtype=torch.float32, device=delta.device)  # S before the block
    block = max(1, BLOCK_ELEMENTS // max(1, batch * d_inner * n))
    for start in range(0, length, block):
        end = min(start + block, length)
        dt = delta[..., start:end].float()
        if delta_bias is not None:
            dt = dt + delta_bias.float()[..., None]
        if delta_softplus:
            dt = F.softplus(dt)
        S = cum[..., None] + dt.cumsum(dim=-1)  # (b, d, t)
        decay = torch.exp(S[..., None] * A32[None, :, None, :])  # (b, d, t, n)
        corr = torch.einsum("bdtn,bdn,bnt->bdt", decay, h0, C[..., start:end].float())
        if z is not None:
            corr = corr * F.silu(z[..., start:end].float())
        y[..., start:end] += corr.to(y.dtype)
        cum = S[..., -1]
        del decay, corr, S, dt
    last = (last.float() + torch.exp(cum[..., None] * A32[None]) * h0).to(last.dtype)
    return y, last


def scan_from(scan: Callable[..., Any], u: Any, delta: Any, A: Any, B: Any, C: Any, D: Any = None, z: Any = None,
              delta_bias: Any = None, delta_softplus: bool = False, initial_state: Any = None,
              **kwargs: Any) -> tuple[Any, Any]:
    """``scan`` (``selective_scan_fn``'s signature, zero start) continued from ``initial_state``:
    (output, final state)."""
    y, last = scan(u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                   return_last_state=True, **kwargs)
    if initial_state is None:
        return y, last
    return add_initial_state(y, last, initial_state, delta, A, C, z, delta_bias, delta_softplus)


# -- hf: transformers' mixers continue a multi-token forward from the state in their cache ---------------
_STATE = threading.local()  # h0: the state of the mixer now running, taken from its cache


def _cached_state(cache: Any, layer_idx: int) -> Any:
    """The recurrent state a mixer's cache holds for ``layer_idx`` (None before its first forward)."""
    layers = getattr(cache, "layers", None)
    if layers is None or layer_idx >= len(layers):
        return None
    layer = layers[layer_idx]
    ready = getattr(layer, "is_recurrent_states_initialized", None)
    if ready is None:
        raise EngineError(f"{type(cache).__name__} keeps no recurrent_states per layer (transformers 5.17-5.19 "
                          "do): the Mamba-1 state carry cannot read it; use prefill_chunk=0")
    return layer.recurrent_states[0] if ready.get(0) else None


def _before_mixer(module: Any, args: tuple, kwargs: dict) -> None:
    cache = kwargs.get("cache_params")
    _STATE.h0 = None if cache is None else _cached_state(cache, module.layer_idx)


def _aligned(t: Any) -> Any:
    """``t``, or an aligned copy of it: mamba-ssm's selective scan loads 16 bytes at a time where the
    length is a multiple of its block (2,048 tokens for long scans) and checks only the last stride, so a
    view that starts mid-vector faults ("CUDA error: misaligned address", the H200 at chunks of 16,384)."""
    import torch

    if t is None or t.stride(-1) != 1 or t.data_ptr() % 16 == 0:
        return t
    return torch.empty_like(t, memory_format=torch.contiguous_format).copy_(t)


def _carrying(original: Callable[..., Any]) -> Callable[..., Any]:
    def scan(u: Any, delta: Any, A: Any, B: Any, C: Any, D: Any = None, z: Any = None, delta_bias: Any = None,
             delta_softplus: bool = False, return_last_state: bool = False, **kwargs: Any) -> Any:
        # after a chunk, transformers passes the conv output sliced past the carried conv window: u is a
        # view d_conv elements in (8 bytes in bf16)
        u, delta, B, C, z = (_aligned(t) for t in (u, delta, B, C, z))
        h0, _STATE.h0 = getattr(_STATE, "h0", None), None
        if h0 is None:
            return original(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                            return_last_state=return_last_state, **kwargs)
        y, last = scan_from(original, u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0, **kwargs)
        return (y, last) if return_last_state else y

    scan.lcplugin_carry = True  # type: ignore[attr-defined]
    return scan


def hf_mixers(model: Any) -> list[Any]:
    return [m for m in model.modules() if type(m).__name__ in HF_MIXERS]


@contextlib.contextmanager
def carried_scans(model: Any) -> Iterator[None]:
    """While open, each Mamba-1 mixer of ``model`` continues a multi-token forward from the recurrent
    state in its cache (transformers' own code starts it from zero; the conv window it already carries)."""
    mixers = hf_mixers(model)
    modules = {sys.modules[type(m).__module__] for m in mixers}
    saved = {mod: mod.mamba_selective_scan for mod in modules}
    hooks = [m.register_forward_pre_hook(_before_mixer, with_kwargs=True) for m in mixers]
    try:
        for mod, fn in saved.items():
            if not getattr(fn, "lcplugin_carry", False):
                mod.mamba_selective_scan = _carrying(fn)
        yield
    finally:
        for handle in hooks:
            handle.remove()
        for mod, fn in saved.items():
            mod.mamba_selective_scan = fn
        _STATE.h0 = None


# -- mamba_ssm: the Mamba-1 layer on one chunk -------------------------------------------------------------
def mixer(m: Any, u: Any, state: tuple[Any, Any] | None, conv: Callable[..., Any], scan: Callable[..., Any]
          ) -> tuple[Any, tuple[Any, Any]]:
    """mamba-ssm's ``Mamba.forward`` (its unfused path) on one chunk ``u`` (b, L, d_model), starting from
    ``state`` = (conv tail (b, d_inner, d_conv - 1), ssm state (b, d_inner, d_state) float32) or None.

    ``conv`` is ``causal_conv1d_fn`` (``initial_states`` needs the channel-last layout: x is a view into
    the (b, L, 2*d_inner) in_proj output, as in Mamba-2's path); ``scan`` is ``selective_scan_fn``.
    Sizes come from the weights, so transformers' ``MambaMixer`` (same parameter names) runs here too.
    """
    import torch
    import torch.nn.functional as F

    batch, length, _ = u.shape
    d_inner, d_state = m.A_log.shape
    dt_rank = m.dt_proj.weight.shape[1]
    width = m.conv1d.weight.shape[-1] - 1
    xz = m.in_proj(u)  # (b, L, 2 d_inner)
    x, z = xz[..., :d_inner].transpose(1, 2), xz[..., d_inner:].transpose(1, 2)  # (b, d, L), channel-last
    conv_state, ssm_state = state if state is not None else (None, None)
    tail = x[..., -width:] if conv_state is None else torch.cat([conv_state, x[..., -width:]], dim=-1)
    tail = F.pad(tail, (max(0, width - tail.shape[-1]), 0))[..., -width:]
    new_conv = tail.transpose(1, 2).contiguous().transpose(1, 2)  # channel-last, as causal_conv1d wants it
    x = conv(x, m.conv1d.weight.squeeze(1), bias=m.conv1d.bias, initial_states=conv_state, activation="silu")
    x_dbl = m.x_proj(x.transpose(1, 2))  # (b, L, dt_rank + 2 d_state)
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    dt = (dt @ m.dt_proj.weight.t()).transpose(1, 2)  # (b, d, L), bias added in the scan
    B, C = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()  # (b, n, L)
    A = -torch.exp(m.A_log.float())
    y, last = scan_from(scan, x, dt, A, B, C, m.D.float(), z=z, delta_bias=m.dt_proj.bias.float(),
                        delta_softplus=True, initial_state=ssm_state)
    return m.out_proj(y.transpose(1, 2)), (new_conv, last.float())


def is_mamba1(m: Any) -> bool:
    """A Mamba-1 mixer: per-channel A (d_inner, d_state), a dt projection, no heads."""
    A_log = getattr(m, "A_log", None)
    return A_log is not None and A_log.dim() == 2 and hasattr(m, "dt_proj") and hasattr(m, "x_proj")
