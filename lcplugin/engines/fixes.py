"""Where a transformers model computes another function than its checkpoint was trained with, and the fix.

The ``hf`` engine is the suite's reference; a reference that silently computes something else would move
every figure measured against it. Each fix here names the upstream code it departs from and is applied
at load, only to the models it concerns, and said in the summary's ``engine_settings.model_fixes``.
"""

from __future__ import annotations

import types
from typing import Any


def _grouped_gated_rms_norm(self: Any, hidden_states: Any, gate: Any = None) -> Any:
    """mamba-ssm's gated RMSNorm (``norm_before_gate=False``), each of ``self.n_groups`` groups alone."""
    import torch

    dtype = hidden_states.dtype
    x = hidden_states.to(torch.float32)
    if gate is not None:
        x = x * torch.nn.functional.silu(gate.to(torch.float32))
    shape = x.shape
    x = x.view(*shape[:-1], self.n_groups, shape[-1] // self.n_groups)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
    return self.weight * x.view(shape).to(dtype)


def mamba2_group_norm(model: Any) -> str | None:
    """Mamba-2 with ``n_groups > 1`` (Mamba-Codestral-7B: 8): transformers' ``MambaRMSNormGated`` (5.17 to
    5.19) normalizes the gated SSM output over the whole inner width, while mamba-ssm's Mamba2 (RMSNormGated,
    ``group_size = d_ssm // ngroups``) and vLLM's Mixer2RMSNormGated normalize each group alone; transformers
    fixed the same in Zamba2 (PR #35943) but not in Mamba2. Each mixer's norm gets the grouped form."""
    config = getattr(model, "config", None)
    groups = int(getattr(config, "n_groups", 1) or 1)
    if getattr(config, "model_type", None) != "mamba2" or groups <= 1:
        return None
    norms = [m for m in model.modules() if type(m).__name__ == "MambaRMSNormGated"]
    for norm in norms:
        norm.n_groups = groups
        norm.forward = types.MethodType(_grouped_gated_rms_norm, norm)
    return (f"mamba2 gated RMSNorm per group ({groups} groups, {len(norms)} mixers), as mamba-ssm and vLLM: "
            "transformers normalizes over all groups together")


def apply(model: Any) -> list[str]:
    """Every fix that concerns ``model``, applied; what was done, one line each."""
    return [done for fix in (mamba2_group_norm,) if (done := fix(model))]
