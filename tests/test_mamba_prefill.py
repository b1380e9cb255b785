"""The state carry of the mamba_ssm engine's chunked prefill, on CPU with pure-torch reference kernels.

The model is a tiny stand-in with mamba-ssm's module structure (MixerModel / Block / Mamba2 attribute
names); the kernels are sequential references of causal_conv1d_fn, mamba_chunk_scan_combined and
layer_norm_fn. The real kernels are checked against one forward on the GPU
(scripts/gpu/check_mamba_chunked.py).
"""

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from lcplugin.engines.mamba_prefill import Kernels, chunked_prefill, load_states  # noqa: E402


def ref_conv(x, weight, bias=None, initial_states=None, activation=None):
    width = weight.shape[1]
    pad = initial_states if initial_states is not None else x.new_zeros(x.shape[0], x.shape[1], width - 1)
    out = F.conv1d(torch.cat([pad, x], dim=-1), weight.unsqueeze(1), bias, groups=x.shape[1])
    return F.silu(out) if activation == "silu" else out


def ref_scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False, initial_states=None,
             return_final_states=False):
    batch, length, heads, p = x.shape
    groups, n = B.shape[2], B.shape[3]
    dt = dt.float() + dt_bias.float()
    dt = F.softplus(dt) if dt_softplus else dt
    state = initial_states.float() if initial_states is not None else x.new_zeros(batch, heads, p, n).float()
    g = torch.arange(heads) // (heads // groups)
    ys = []
    for t in range(length):
        dA = torch.exp(dt[:, t] * A)  # (b, h)
        Bt, Ct = B[:, t, g].float(), C[:, t, g].float()  # (b, h, n)
        state = state * dA[..., None, None] + (dt[:, t, :, None] * x[:, t].float())[..., None] * Bt[:, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ct) + D[:, None] * x[:, t].float())
    y = torch.stack(ys, dim=1).to(x.dtype)
    return (y, state) if return_final_states else y


def ref_add_norm(x, weight, bias, residual=None, prenorm=False, residual_in_fp32=False, eps=1e-5, is_rms_norm=True):
    residual = x + residual if residual is not None else x
    out = residual * torch.rsqrt(residual.pow(2).mean(-1, keepdim=True) + eps) * weight
    return (out, residual.float() if residual_in_fp32 else residual) if prenorm else out


class RMS(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(1 + 0.1 * torch.randn(d)), None, 1e-5

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class GatedRMS(RMS):
    def __init__(self, d, groups):
        super().__init__(d)
        self.groups = groups

    def forward(self, y, z):  # norm_before_gate=False, grouped, as mamba-ssm's RMSNormGated
        y = (y * F.silu(z)).unflatten(-1, (self.groups, -1))
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.flatten(-2) * self.weight


class Mixer(nn.Module):
    def __init__(self, d, d_state=8, headdim=8, ngroups=2, d_conv=4):
        super().__init__()
        self.d_ssm = 2 * d
        self.ngroups, self.d_state, self.headdim, self.nheads = ngroups, d_state, headdim, 2 * d // headdim
        self.activation, self.chunk_size, self.D_has_hdim, self.rmsnorm = "silu", 256, False, True
        self.dt_limit = (0.0, float("inf"))
        conv_dim = self.d_ssm + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d, 2 * self.d_ssm + 2 * ngroups * d_state + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1)
        self.dt_bias = nn.Parameter(torch.randn(self.nheads) * 0.5)
        self.A_log = nn.Parameter(torch.rand(self.nheads))
        self.D = nn.Parameter(torch.randn(self.nheads))
        self.norm = GatedRMS(self.d_ssm, ngroups)
        self.out_proj = nn.Linear(self.d_ssm, d, bias=False)


def tiny_model(d=16, layers=3, vocab=50, fused=True):
    torch.manual_seed(0)
    blocks = nn.ModuleList()
    for _ in range(layers):
        block = nn.Module()
        block.norm, block.mixer, block.mlp = RMS(d), Mixer(d), None
        block.fused_add_norm, block.residual_in_fp32 = fused, True
        blocks.append(block)
    backbone = nn.Module()
    backbone.embedding, backbone.layers, backbone.norm_f = nn.Embedding(vocab, d), blocks, RMS(d)
    backbone.fused_add_norm, backbone.residual_in_fp32 = fused, True
    return SimpleNamespace(backbone=backbone)


KERNELS = Kernels(conv=ref_conv, scan=ref_scan, add_norm=ref_add_norm)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("chunk", [13, 7, 2])  # 4, 6 and 20 pieces; 2 < d_conv - 1 cuts inside the conv window
def test_chunked_prefill_equals_one_forward(chunk, fused):
    model = tiny_model(fused=fused)
    ids = torch.randint(0, 50, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole, whole_states = chunked_prefill(model, ids, 40, 9, KERNELS)
        parts, part_states = chunked_prefill(model, ids, chunk, 9, KERNELS)
    assert whole.shape == parts.shape == (1, 9, 16)
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-5)
    for (c1, s1), (c2, s2) in zip(whole_states, part_states, strict=True):
        torch.testing.assert_close(c2, c1, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s2, s1, rtol=1e-5, atol=1e-5)


def test_prefill_continues_exactly_where_a_longer_prompt_would_be():
    """The states after 30 tokens, fed the next 10, give the last hidden states of the 40-token prompt:
    what decoding from the carried state relies on."""
    model = tiny_model()
    ids = torch.randint(0, 50, (1, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole, _ = chunked_prefill(model, ids, 40, 1, KERNELS)
        first, states = chunked_prefill(model, ids[:, :30], 30, 1, KERNELS)
        # the carried states are the only link between the two halves
        from lcplugin.engines import mamba_prefill

        hidden, residual = model.backbone.embedding(ids[:, 30:]), None
        for i, block in enumerate(model.backbone.layers):
            hidden, residual = mamba_prefill._add_norm(KERNELS, block.norm, hidden, residual, True, True)
            hidden, states[i] = mamba_prefill._mixer(block.mixer, hidden, states[i], KERNELS)
        last = ref_add_norm(hidden[:, -1:], model.backbone.norm_f.weight, None, residual=residual[:, -1:])
    torch.testing.assert_close(last, whole, rtol=1e-5, atol=1e-5)


def test_states_land_in_the_decoding_cache_layout():
    model = tiny_model()
    ids = torch.randint(0, 50, (1, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, states = chunked_prefill(model, ids, 6, 1, KERNELS)
    conv_dim = states[0][0].shape[1]
    # mamba-ssm's allocate_inference_cache: conv (b, d, d_conv) channel-last, ssm (b, h, p, n)
    cache = {i: (torch.full((1, 4, conv_dim), 7.0).transpose(1, 2), torch.zeros_like(s)) for i, (_, s) in enumerate(states)}
    load_states(SimpleNamespace(key_value_memory_dict=cache), states)
    mixer = model.backbone.layers[0].mixer
    with torch.no_grad():
        h = ref_add_norm(model.backbone.embedding(ids), model.backbone.layers[0].norm.weight, None, prenorm=True,
                         residual_in_fp32=True)[0]
        xbc = mixer.in_proj(h)[..., mixer.d_ssm: 2 * mixer.d_ssm + 2 * mixer.ngroups * mixer.d_state]
    conv_buf, ssm_buf = cache[0]
    assert torch.equal(conv_buf[0, :, 0], torch.zeros(conv_dim))
    torch.testing.assert_close(conv_buf[0, :, 1:], xbc[0, -3:].T)  # the last d_conv - 1 inputs, oldest first
    torch.testing.assert_close(ssm_buf, states[0][1])
