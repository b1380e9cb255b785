"""What a test will need in device memory, estimated from the model's config before anything loads.

Why: past 128k a Transformer's KV cache alone outgrows one GPU (Llama-3.1-8B: 128 KiB per token, 128 GiB
at 1M), and an out-of-memory error mid-run costs the load, kills the worker and says nothing about
where the limit was. So each test is priced first, and one that cannot fit is skipped with one line
naming the figures; the estimate is also recorded beside the measured peak on every test
(``mem_estimate_gb``), so every run checks it.

The parts, each from the config (no weights read):

- weights: the checkpoint's weight files (resized to the dtype it loads in), else the parameters
  of the architecture built on the meta device, or, for mamba-ssm checkpoints, its state-dict shapes;
- KV cache: attention layers x key-value heads x head dim x 2 (keys, values) x dtype bytes per token,
  times the tokens cached at the peak moment (see ``ModelMemory.at``);
- SSM states: each Mamba layer's conv window and state, per sequence (constant in the context);
- activations: the widest forward a chunk makes, per token, times the tokens one forward reads (the
  engine's own prefill chunk rule, or the whole prompt): 4 x hidden for the residual stream and
  norms, plus the widest block (3 x the MLP width: gate, up and their product; the attention
  projections; or a Mamba in_proj plus the d_inner-wide intermediates its implementation keeps, a
  count fitted per implementation on measured peaks: ``MAMBA*_INTERMEDIATES``).

Checked against the H200 reference run (BENCHMARKS.md): Llama-3.1-8B at 128k in 16k chunks,
35.2 GB measured, 35.2 GB estimated (tests/test_memory.py holds the cells it is checked on).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GIB = 1 << 30
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "auto": 2}
MAMBA1 = frozenset({"mamba", "falcon_mamba"})
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
# d_inner-wide intermediates a Mamba forward holds per token beside its in_proj output, fitted on the H200
# reference run's torch peaks (BENCHMARKS.md, 2026-11-28, 8k/32k/128k): the slope of peak against forward
# length. Mamba-1 through transformers' CUDA path: Mamba-2.8B 6.6, Jamba 5.9; Mamba-2 through transformers:
# Nemotron-H 7.6, Zamba2 10.0; Mamba-2 through mamba-ssm's fused kernels: Codestral 2.9.
MAMBA1_INTERMEDIATES = 6.5
MAMBA2_HF_INTERMEDIATES = 8.5
MAMBA2_FUSED_INTERMEDIATES = 3.0


@dataclass(frozen=True)
class ModelMemory:
    """What one model costs, apart from the context: bytes, and bytes per token."""

    weights: int
    kv_per_token: int
    states: int  # per sequence
    act_per_token: int  # the widest forward's activations per token read in it
    chunk: int  # tokens per forward (0: the whole prompt in one)
    weights_from: str  # "files", "meta" or "shapes": how the weights were counted
    # the KV cache allocated whole, per sequence, in multiples of this (the hf engine's static cache: 4,096 rows
    # for a 1k prompt; the preflight sets it where the engine picks that cache); 0: the tokens cached so far
    kv_bucket: int = 0

    def chunked(self, tokens: int) -> bool:
        """Whether a prompt of ``tokens`` is read in more than one forward (such a prompt runs alone)."""
        return 0 < self.chunk < tokens

    def at(self, tokens: int, new_tokens: int = 0, batch: int = 1) -> CellMemory:
        """The estimate for ``batch`` sequences of ``tokens`` prompt tokens and ``new_tokens`` generated, read
        together (one forward over all of them): its peak moment. Read in chunks, a prompt peaks in the last
        full chunk's forward (the widest activations beside the cache so far) or in the last, shorter one (the
        whole cache), never both at once: counting both put Jamba at 1M 15 % over its measured peak (H200,
        2026-11-30). Decoding adds the new tokens' cache with no wide activations. Checked batched on the H200
        (2026-12-01, Llama-3.1-8B at 8k: batch 16 48.7 GB, batch 32 81.2 GB measured)."""
        chunk = min(self.chunk, tokens) if self.chunk else tokens
        full = tokens // chunk * chunk if chunk else tokens  # where the last full-width forward ends
        moments = [(full, chunk), (tokens, tokens - full), (tokens + new_tokens, 0)]  # (cached, forward)
        if self.kv_bucket:  # a static cache: allocated before the prompt is read, whole
            rows = -(-(tokens + new_tokens) // self.kv_bucket) * self.kv_bucket
            moments = [(rows, forward) for _, forward in moments]
        cached, forward = max(moments, key=lambda m: self.kv_per_token * m[0] + self.act_per_token * m[1])
        return CellMemory(tokens=tokens, weights=self.weights, kv=self.kv_per_token * cached * batch,
                          states=self.states * batch, activations=self.act_per_token * forward * batch,
                          forward_tokens=forward * batch, kv_per_token=self.kv_per_token, batch=batch)


@dataclass(frozen=True)
class CellMemory:
    """One test's estimate, in bytes."""

    tokens: int
    weights: int
    kv: int
    states: int
    activations: int
    forward_tokens: int  # the forward at the peak moment: a chunk, the last shorter one, the prompt; 0: decoding
    kv_per_token: int
    batch: int = 1  # sequences read together (their forward_tokens summed)

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.states + self.activations

    def parts(self) -> str:
        """``KV cache 128.0 GiB + weights 15.0 GiB + activations 1.8 GiB (16,384-token forwards)``: the
        parts of at least 0.05 GiB, largest first."""
        named = [("KV cache", self.kv), ("weights", self.weights), ("SSM states", self.states),
                 ("activations", self.activations)]
        shown = [f"{name} {size / GIB:.1f} GiB" for name, size in sorted(named, key=lambda p: -p[1])
                 if size >= 0.05 * GIB]
        text = " + ".join(shown) or f"{self.total / GIB:.2f} GiB"
        notes = [f"{self.batch} sequences at once"] if self.batch > 1 else []
        notes += [f"{self.forward_tokens:,}-token forwards"] if self.activations >= 0.05 * GIB else []
        return text + (f" ({', '.join(notes)})" if notes else "")

    def as_summary(self) -> dict[str, Any]:
        """The parts in GB (1e9, as every memory figure of a summary), for the record beside the peak."""
        return {k: (v / 1e9 if k in ("weights", "kv", "states", "activations") else v)
                for k, v in asdict(self).items()} | {"total_gb": self.total / 1e9}


# -- the architecture, read from a transformers config -------------------------------------------------

def _get(config: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def layer_kinds(config: Any) -> list[str]:
    """Each layer's mixer, ``attention``, ``mamba``, ``hybrid`` (Zamba2: Mamba plus the shared attention
    block, with its own KV cache) or ``mlp``, from whichever field the family uses."""
    kinds = _get(config, "layers_block_type")
    if kinds:  # transformers names Mamba mixers "mamba" or "linear_attention", depending on family and version
        names = {"linear_attention": "mamba", "mamba2": "mamba", "full_attention": "attention", "moe": "mlp"}
        return [names.get(str(k), str(k)) for k in kinds]
    pattern = _get(config, "hybrid_override_pattern")
    if pattern:
        return [{"M": "mamba", "*": "attention", "-": "mlp", "E": "mlp"}.get(c, "mlp") for c in pattern]
    n = int(config.num_hidden_layers)
    return ["mamba"] * n if config.model_type in MAMBA1 | {"mamba2"} else ["attention"] * n


def kv_bytes_per_token(config: Any, dtype_bytes: int) -> int:
    """Attention layers x key-value heads x head dim x 2 x dtype bytes."""
    kinds = layer_kinds(config)
    layers = sum(1 for k in kinds if k in ("attention", "hybrid"))
    if not layers:
        return 0
    heads = int(config.num_attention_heads)
    kv_heads = int(_get(config, "num_key_value_heads", default=heads))
    head_dim = int(_get(config, "attention_head_dim", "head_dim", default=config.hidden_size // heads))
    return layers * kv_heads * head_dim * 2 * dtype_bytes


def _mamba_dims(config: Any) -> tuple[int, int, int, int] | None:
    """(d_inner, state elements, conv channels x window, in_proj width) of one Mamba layer, or None."""
    from .prefill import mamba1_width, ssd_width

    t, h = config.model_type, config.hidden_size
    width = mamba1_width(config)  # Mamba-1 mixers (mamba, falcon_mamba, jamba): in_proj is 2 * d_inner
    if width is not None:
        d_inner = width // 2
        state = int(_get(config, "state_size", "mamba_d_state"))
        conv = int(_get(config, "conv_kernel", "mamba_d_conv", default=4))
        return d_inner, d_inner * state, d_inner * conv, width
    width = ssd_width(config)
    if width is None:
        return None
    if t == "mamba2":
        d_inner, groups, state = int(config.expand * h), config.n_groups, config.state_size
        conv = config.conv_kernel
    elif t == "nemotron_h":
        d_inner, groups, state = config.mamba_num_heads * config.mamba_head_dim, config.n_groups, config.ssm_state_size
        conv = _get(config, "conv_kernel", default=4)
    else:  # zamba2, bamba, falcon_h1
        d_inner = int(_get(config, "mamba_d_ssm") or config.mamba_expand * h)
        groups, state = _get(config, "mamba_ngroups", "mamba_n_groups"), config.mamba_d_state
        conv = _get(config, "mamba_d_conv", default=4)
    conv_dim = d_inner + 2 * groups * state
    return d_inner, d_inner * state, conv_dim * conv, width


def hf_memory(config: Any, dtype_bytes: int) -> tuple[int, int, int]:
    """(KV bytes per token, SSM state bytes per sequence, activation bytes per token) of a transformers
    config."""
    kinds = layer_kinds(config)
    h = int(config.hidden_size)
    mamba = _mamba_dims(config) if {"mamba", "hybrid"} & set(kinds) else None
    states = sum(1 for k in kinds if k in ("mamba", "hybrid")) * (mamba[1] + mamba[2]) * dtype_bytes if mamba else 0
    widths = []
    intermediate = _get(config, "intermediate_size")
    if intermediate and config.model_type not in MAMBA1:  # gate, up and their product; Nemotron-H's relu² has no gate
        widths.append((2 if config.model_type == "nemotron_h" else 3) * int(intermediate))
    if {"attention", "hybrid"} & set(kinds):
        heads = int(config.num_attention_heads)
        head_dim = int(_get(config, "attention_head_dim", "head_dim", default=h // heads))
        kv_heads = int(_get(config, "num_key_value_heads", default=heads))
        widths.append((heads + 2 * kv_heads) * head_dim + heads * head_dim)
    if mamba:
        per = MAMBA1_INTERMEDIATES if mamba[3] == 2 * mamba[0] else MAMBA2_HF_INTERMEDIATES
        widths.append(int(mamba[3] + per * mamba[0]))
    return kv_bytes_per_token(config, dtype_bytes), states, (4 * h + max(widths, default=0)) * dtype_bytes


def mamba_ssm_memory(config: Mapping[str, Any], dtype_bytes: int) -> tuple[int, int, int, int]:
    """(weights, KV per token, states, activations per token) of a mamba-ssm checkpoint's config."""
    from .layouts import mamba2_dims, ssm_kind, state_shapes

    weights = sum(_numel(shape) for shape in state_shapes(config).values()) * dtype_bytes
    d, layers = int(config["d_model"]), int(config["n_layer"])
    if ssm_kind(config) == "Mamba2":
        dims = mamba2_dims(config)
        ssm = {k: v for k, v in dict(config.get("ssm_cfg") or {}).items() if k != "layer"}
        state = dims["d_ssm"] * int(ssm.get("d_state", 128))
        conv, width, d_inner = dims["conv_dim"] * dims["d_conv"], dims["d_in_proj"], dims["d_inner"]
    else:
        ssm = dict(config.get("ssm_cfg") or {})
        d_inner = int(ssm.get("expand", 2)) * d
        state, conv, width = d_inner * int(ssm.get("d_state", 16)), d_inner * int(ssm.get("d_conv", 4)), 2 * d_inner
    per = MAMBA2_FUSED_INTERMEDIATES if ssm_kind(config) == "Mamba2" else MAMBA1_INTERMEDIATES
    return weights, 0, layers * (state + conv) * dtype_bytes, int(4 * d + width + per * d_inner) * dtype_bytes


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def meta_weights(config: Any, dtype_bytes: int) -> int:
    """Parameter bytes of the architecture built on the meta device (nothing allocated; tied embeddings
    counted once)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters()) * dtype_bytes


def file_weights(folder: Path, dtype_bytes: int, stored: str | None) -> int | None:
    """Bytes of the weight files in ``folder``, resized from the dtype they are stored in (the config's
    ``torch_dtype``; assumed the loading dtype when absent); None where there are none."""
    files = [p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
             and not p.name.startswith(("optimizer", "training_args"))]
    if not files:
        return None
    size = sum(p.stat().st_size for p in files)
    stored_bytes = DTYPE_BYTES.get(str(stored).removeprefix("torch."), dtype_bytes) if stored else dtype_bytes
    return size * dtype_bytes // stored_bytes


def local_folder(source: str, revision: str | None = None) -> Path | None:
    """The folder holding a checkpoint's config: ``source`` itself, or its snapshot in the local Hugging Face
    cache; None when neither is on disk (the test then skips for its weights before any estimate)."""
    from ..models.hub import cached_folder

    path = Path(source).expanduser()
    return path if path.is_dir() else cached_folder(source, revision)


def raw_config(folder: Path) -> dict[str, Any]:
    """A checkpoint's config as written: ``config.json`` (transformers, or mamba-ssm's with ``d_model``), or
    Mistral's ``params.json`` read as a mamba-ssm config; empty where the folder has neither."""
    if (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if (folder / "params.json").is_file():
        from .layouts import mistral_config

        return mistral_config(json.loads((folder / "params.json").read_text(encoding="utf-8")))
    return {}


def checkpoint_layer_kinds(folder: Path, trust_remote_code: bool = False) -> list[str]:
    """Each layer's mixer (``layer_kinds``) of the checkpoint in ``folder``, for what scales with the context
    without any weights: a mamba-ssm config's layers are Mamba mixers, attention only at ``attn_layer_idx``."""
    raw = raw_config(folder)
    if "d_model" in raw:
        attention = {int(i) for i in raw.get("attn_layer_idx") or ()}
        return ["attention" if i in attention else "mamba" for i in range(int(raw["n_layer"]))]
    from transformers import AutoConfig

    return layer_kinds(AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code))


def model_memory(folder: Path, dtype: str, chunk: int, config: Any = None) -> ModelMemory:
    """A checkpoint's costs from its folder: a transformers ``config.json``, a mamba-ssm one (``d_model``)
    or Mistral's ``params.json``. ``config``: an already-built transformers config, which wins.
    ``chunk``: the tokens the engine reads per forward (0: the whole prompt)."""
    dtype_bytes = DTYPE_BYTES.get(dtype, 2)
    raw = raw_config(folder)
    if config is None and "d_model" in raw:
        weights, kv, states, act = mamba_ssm_memory(raw, dtype_bytes)
        counted = file_weights(folder, dtype_bytes, raw.get("torch_dtype"))
        return ModelMemory(weights=counted or weights, kv_per_token=kv, states=states, act_per_token=act,
                           chunk=chunk, weights_from="files" if counted else "shapes")
    if config is None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(folder))
    kv, states, act = hf_memory(config, dtype_bytes)
    counted = file_weights(folder, dtype_bytes, raw.get("torch_dtype") or raw.get("dtype")) if folder.is_dir() else None
    weights = counted if counted is not None else meta_weights(config, dtype_bytes)
    return ModelMemory(weights=weights, kv_per_token=kv, states=states, act_per_token=act, chunk=chunk,
                       weights_from="files" if counted is not None else "meta")
