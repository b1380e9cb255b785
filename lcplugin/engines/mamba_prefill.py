"""Chunked prefill of a mamba-ssm model (Mamba-2 or Mamba-1 layers), carrying conv and SSM state.

mamba-ssm 2.3.2 cannot do this itself: ``Mamba2.forward`` with ``seqlen_offset > 0`` calls ``step()``
(one token), and ``generate`` re-prefills from zero. One forward longer than about 2^31 / d_in_proj
tokens overflows the int32 offsets of its Triton SSD kernels (see ``layouts.auto_prefill_chunk``), so
at 128k the prompt must be cut. This module runs the model's own layers chunk by chunk (embedding,
each Block's add+norm, the Mamba-2 mixer with ``initial_states``, final norm) and keeps the hidden
states of the last tokens only, for the logits the caller needs. The kernels are injected, so the
state carry is tested on a CPU with pure-torch reference kernels (tests/test_mamba_prefill.py).

The conv state is the last ``d_conv - 1`` pre-conv inputs, cut from the chunk itself (the same thing
``causal_conv1d_fn(return_final_states=True)`` returns, but also right for a chunk shorter than the
kernel); the SSM state is ``mamba_chunk_scan_combined(return_final_states=True)``'s. Mamba-1 layers
(``Mamba``, Mamba-2.8B) take no initial state in ``selective_scan_fn``: ``mamba1_carry.mixer`` adds the
carried state's contribution to each chunk's zero-start scan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .mamba1_carry import is_mamba1
from .mamba1_carry import mixer as mamba1_mixer


@dataclass(frozen=True)
class Kernels:
    conv: Callable[..., Any]  # causal_conv1d_fn(x (b d l), weight (d w), bias, initial_states=, activation=)
    scan: Callable[..., Any]  # mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, ..., return_final_states=True)
    add_norm: Callable[..., Any] | None  # layer_norm_fn (fused add + norm); None when no block fuses it
    selective_scan: Callable[..., Any] | None = None  # selective_scan_fn (Mamba-1 layers), return_last_state=True


def cuda_kernels() -> Kernels:
    from causal_conv1d import causal_conv1d_fn
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    from mamba_ssm.ops.triton.layer_norm import layer_norm_fn
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    return Kernels(conv=causal_conv1d_fn, scan=mamba_chunk_scan_combined, add_norm=layer_norm_fn,
                   selective_scan=selective_scan_fn)


def _is_rms(norm: Any) -> bool:
    return not hasattr(norm, "bias") or norm.bias is None


def _add_norm(kernels: Kernels, norm: Any, hidden: Any, residual: Any, fused: bool, fp32: bool,
              prenorm: bool = True) -> Any:
    """``Block.forward``'s add + norm (and ``MixerModel``'s final one with ``prenorm=False``)."""
    import torch

    if fused:
        return kernels.add_norm(hidden, norm.weight, norm.bias, residual=residual, prenorm=prenorm,
                                residual_in_fp32=fp32, eps=norm.eps, is_rms_norm=_is_rms(norm))
    residual = hidden + residual if residual is not None else hidden
    out = norm(residual.to(dtype=norm.weight.dtype))
    if fp32:
        residual = residual.to(torch.float32)
    return (out, residual) if prenorm else out


def _mixer(m: Any, u: Any, state: tuple[Any, Any] | None, kernels: Kernels) -> tuple[Any, tuple[Any, Any]]:
    """``Mamba2.forward``'s unfused path on one chunk, starting from ``state`` (None: from zero)."""
    import torch
    import torch.nn.functional as F

    batch, length, _ = u.shape
    zxbcdt = m.in_proj(u)
    d_bc = 2 * m.ngroups * m.d_state
    d_mlp = (zxbcdt.shape[-1] - 2 * m.d_ssm - d_bc - m.nheads) // 2
    z0, x0, z, xBC, dt = torch.split(zxbcdt, [d_mlp, d_mlp, m.d_ssm, m.d_ssm + d_bc, m.nheads], dim=-1)
    conv_state, ssm_state = state if state is not None else (None, None)
    xt = xBC.transpose(1, 2)  # (b, d, l), channel-last in memory as causal_conv1d wants
    width = m.conv1d.weight.shape[-1] - 1
    tail = xt[..., -width:] if conv_state is None else torch.cat([conv_state, xt[..., -width:]], dim=-1)
    tail = F.pad(tail, (max(0, width - tail.shape[-1]), 0))[..., -width:]
    new_conv = tail.transpose(1, 2).contiguous().transpose(1, 2)
    xBC = kernels.conv(xt, m.conv1d.weight.squeeze(1), bias=m.conv1d.bias, initial_states=conv_state,
                       activation=m.activation).transpose(1, 2)
    x, B, C = torch.split(xBC, [m.d_ssm, m.ngroups * m.d_state, m.ngroups * m.d_state], dim=-1)
    A = -torch.exp(m.A_log.float())
    extra = {} if m.dt_limit == (0.0, float("inf")) else {"dt_limit": m.dt_limit}
    y, new_ssm = kernels.scan(
        x.reshape(batch, length, m.nheads, m.headdim), dt, A,
        B.reshape(batch, length, m.ngroups, m.d_state), C.reshape(batch, length, m.ngroups, m.d_state),
        chunk_size=m.chunk_size, D=m.D.reshape(m.nheads, m.headdim) if m.D_has_hdim else m.D,
        z=None if m.rmsnorm else z.reshape(batch, length, m.nheads, m.headdim), dt_bias=m.dt_bias,
        dt_softplus=True, initial_states=ssm_state, return_final_states=True, **extra)
    y = y.reshape(batch, length, m.d_ssm)
    if m.rmsnorm:
        y = m.norm(y, z)
    if d_mlp > 0:
        y = torch.cat([F.silu(z0) * x0, y], dim=-1)
    return m.out_proj(y), (new_conv, new_ssm)


def _is_mamba2(m: Any) -> bool:
    return hasattr(m, "ngroups") and hasattr(m, "dt_bias")


def chunkable(model: Any) -> bool:
    """Every layer a Mamba-2 or Mamba-1 mixer (an MLP after it is fine; attention layers would need a KV cache)."""
    return all(_is_mamba2(block.mixer) or is_mamba1(block.mixer) for block in model.backbone.layers)


def _run_mixer(m: Any, u: Any, state: tuple[Any, Any] | None, kernels: Kernels) -> tuple[Any, tuple[Any, Any]]:
    if _is_mamba2(m):
        return _mixer(m, u, state, kernels)
    if kernels.selective_scan is None:
        raise ValueError("a Mamba-1 layer needs Kernels.selective_scan")
    return mamba1_mixer(m, u, state, kernels.conv, kernels.selective_scan)


def chunked_prefill(model: Any, ids: Any, chunk: int, keep_last: int, kernels: Kernels
                    ) -> tuple[Any, list[tuple[Any, Any]]]:
    """Final-normed hidden states of the last ``keep_last`` tokens of ``ids`` (1, L), and each
    layer's (conv, ssm) state after the last token; no forward longer than ``chunk`` tokens."""
    import torch

    backbone = model.backbone
    length = ids.shape[1]
    states: list[tuple[Any, Any] | None] = [None] * len(backbone.layers)
    kept = []
    for start in range(0, length, chunk):
        end = min(start + chunk, length)
        hidden, residual = backbone.embedding(ids[:, start:end]), None
        for i, block in enumerate(backbone.layers):
            hidden, residual = _add_norm(kernels, block.norm, hidden, residual, block.fused_add_norm,
                                         block.residual_in_fp32)
            hidden, states[i] = _run_mixer(block.mixer, hidden, states[i], kernels)
            if block.mlp is not None:
                hidden, residual = _add_norm(kernels, block.norm2, hidden, residual, block.fused_add_norm,
                                             block.residual_in_fp32)
                hidden = block.mlp(hidden)
        first = max(0, length - keep_last - start)
        if first < end - start:
            kept.append(_add_norm(kernels, backbone.norm_f, hidden[:, first:], residual[:, first:],
                                  backbone.fused_add_norm, backbone.residual_in_fp32, prenorm=False))
        del hidden, residual
    return torch.cat(kept, dim=1), states  # type: ignore[return-value]


def load_states(inference_params: Any, states: list[tuple[Any, Any]]) -> None:
    """Copy prefill states into mamba-ssm's decoding cache (conv buffer: the last d_conv inputs,
    of which ``step()`` rolls the oldest out, so only the last d_conv - 1 matter; Mamba-1's SSM buffer
    is in the model's dtype, as its one forward leaves it)."""
    for i, (conv, ssm) in enumerate(states):
        conv_buf, ssm_buf = inference_params.key_value_memory_dict[i]
        conv_buf.zero_()
        conv_buf[..., -conv.shape[-1]:].copy_(conv)
        ssm_buf.copy_(ssm)
