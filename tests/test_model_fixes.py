"""The hf engine's corrections to transformers models (lcplugin/engines/fixes.py), on tiny random models.

Mamba-2 with several groups: the reference below is mamba-ssm's ``rms_norm_ref`` (ops/triton/layernorm_gated.py,
``norm_before_gate=False``, ``group_size = d_ssm // ngroups``), the norm Mamba-Codestral-7B was trained with."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lcplugin.engines.base import EngineConfig  # noqa: E402
from lcplugin.engines.hf import HFEngine  # noqa: E402
from lcplugin.models.tiny import materialize  # noqa: E402


def mamba_ssm_norm(x, z, weight, group_size: int, eps: float):
    x = x.float() * torch.nn.functional.silu(z.float())
    g = x.view(*x.shape[:-1], -1, group_size)
    g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps)
    return g.view(x.shape) * weight.float()


def grouped_mamba2(tmp_path: Path, groups: int) -> Path:
    """tiny-mamba2's shape with ``groups`` groups, random weights, saved with its tokenizer."""
    from transformers import AutoConfig, Mamba2ForCausalLM

    tiny = materialize("tiny-mamba2")
    folder = tmp_path / f"mamba2-{groups}-groups"
    config = AutoConfig.from_pretrained(tiny)
    config.n_groups = groups
    torch.manual_seed(0)
    Mamba2ForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny / name).exists():
            shutil.copy(tiny / name, folder / name)
    return folder


def _engine(tmp_path: Path, groups: int) -> HFEngine:
    folder = grouped_mamba2(tmp_path, groups)
    return HFEngine(EngineConfig(engine="hf", model=folder.name, source=str(folder), tokenizer=str(folder),
                                 dtype="float32", engine_args={"ignore_eos": True}))


def test_mamba2_with_several_groups_normalizes_each_group_as_mamba_ssm(tmp_path):
    """transformers (5.17-5.19) normalizes Mamba-2's gated output over all groups together: Codestral's 8 groups
    would be another function in the hf engine than in mamba_ssm and vLLM."""
    engine = _engine(tmp_path, groups=2)
    try:
        mixers = [layer.mixer for layer in engine.model.backbone.layers]
        width = mixers[0].intermediate_size
        torch.manual_seed(1)
        for mixer in mixers:
            with torch.no_grad():
                mixer.norm.weight.uniform_(0.5, 1.5)
            x, z = torch.randn(2, 5, width), torch.randn(2, 5, width)
            x[..., : width // 2] *= 10  # groups of unlike scale: a norm over both would shrink the second
            want = mamba_ssm_norm(x, z, mixer.norm.weight, width // 2, mixer.norm.variance_epsilon)
            torch.testing.assert_close(mixer.norm(x, z), want, rtol=1e-5, atol=1e-5)
        assert engine.describe()["model_fixes"] == [
            f"mamba2 gated RMSNorm per group (2 groups, {len(mixers)} mixers), as mamba-ssm and vLLM: transformers "
            "normalizes over all groups together"]
    finally:
        engine.close()


def test_one_group_is_left_as_transformers_has_it(tmp_path):
    engine = _engine(tmp_path, groups=1)
    try:
        assert "model_fixes" not in engine.describe()
        assert "forward" not in vars(engine.model.backbone.layers[0].mixer.norm)
    finally:
        engine.close()
