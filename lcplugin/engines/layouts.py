"""Checkpoint layouts, Mistral's Mamba config, the state-dict key rule and the prefill-chunk arithmetic.

No CUDA and no mamba-ssm here, so all of it is tested on a CPU. Three layouts exist for the same
kind of model and no loader reads all of them: Mistral's (``params.json`` + ``consolidated.safetensors``,
keys prefixed ``model.``, read by mistral-inference), mamba-ssm's own (``config.json`` with ``d_model``
+ ``pytorch_model.bin``, read by ``MambaLMHeadModel.from_pretrained``) and transformers'
(``config.json`` with ``model_type``). The engine detects the layout from the files present and
refuses, in one line naming the engine that reads it, a layout it cannot read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EngineError

# which engine reads each layout
READER = {"mistral": "mamba_ssm", "mamba_ssm": "mamba_ssm", "transformers": "hf"}
# The layouts of the built-in specs' hub repos as published (checked by a test against each spec's
# engine; used when the hub cannot be listed). Mamba-Codestral's main branch ships Mistral's files only.
KNOWN_REPOS = {
    "mistralai/Mamba-Codestral-7B-v0.1": "mistral",
    "state-spaces/mamba-2.8b": "mamba_ssm",
    "state-spaces/mamba2-2.7b": "mamba_ssm",
    "state-spaces/mamba-2.8b-hf": "transformers",
    "meta-llama/Llama-3.1-8B-Instruct": "transformers",
    "Qwen/Qwen2.5-7B-Instruct": "transformers",
    "nvidia/Nemotron-H-8B-Reasoning-128K": "transformers",
    "ai21labs/AI21-Jamba-Reasoning-3B": "transformers",
    "Zyphra/Zamba2-7B-Instruct": "transformers",
}
MISTRAL_PREFIX = "model."
# MambaArgs in mistral-inference (src/mistral_inference/args.py): every field but model_type is required
_MISTRAL_KEYS = ("dim", "n_layers", "vocab_size", "n_groups", "rms_norm", "residual_in_fp32", "fused_add_norm",
                 "pad_vocab_size_multiple", "tie_embeddings")
# mamba-ssm 2.3.2 constructor defaults (modules/mamba2.py, modules/mamba_simple.py)
_MAMBA2_DEFAULTS = {"d_state": 128, "d_conv": 4, "expand": 2, "headdim": 64, "d_ssm": None, "ngroups": 1,
                    "rmsnorm": True, "bias": False, "conv_bias": True, "D_has_hdim": False}
_MAMBA1_DEFAULTS = {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto", "bias": False, "conv_bias": True}
# Triton SSD kernels of mamba-ssm 2.3.2 compute offsets such as pid_c*chunk_size*stride_dt_seqlen in
# int32, and dt is a view into the in_proj output (row stride d_in_proj): past 2^31 / d_in_proj tokens
# in one forward they crash or return wrong output (state-spaces/mamba issues 503, 686, 1015).
INT32_LIMIT = 2**31
CHUNK_MARGIN = 0.9
SSD_CHUNK = 256  # chunks that are multiples of the kernels' own chunk cut the sequence where they do


@dataclass(frozen=True)
class Layout:
    name: str  # "mistral", "mamba_ssm", "transformers" or "unknown"
    detail: str  # the files (and model_type) that decided it, for messages

    @property
    def reader(self) -> str | None:
        return READER.get(self.name)


def detect_layout(files: Iterable[str], read_json: Callable[[str], Mapping[str, Any]]) -> Layout:
    """Name the layout of a checkpoint from its file names (``read_json`` opens ``config.json``)."""
    names = set(files)
    if "params.json" in names and "consolidated.safetensors" in names:
        return Layout("mistral", "params.json + consolidated.safetensors")
    if "config.json" in names:
        config = read_json("config.json")
        if "d_model" in config and "n_layer" in config:
            return Layout("mamba_ssm", "config.json with d_model + pytorch_model.bin")
        if "model_type" in config:
            return Layout("transformers", f"config.json with model_type {config['model_type']!r}")
    return Layout("unknown", ", ".join(sorted(names)[:8]) or "no files")


def source_layout(source: str, revision: str | None = None) -> Layout:
    """The layout of a local folder or hub repo: its files listed (hub when online), else the known table."""
    folder = Path(source)
    if folder.is_dir():
        return detect_layout((p.name for p in folder.iterdir()),
                             lambda name: json.loads((folder / name).read_text()))
    try:
        from huggingface_hub import hf_hub_download, list_repo_files

        files = list_repo_files(source, revision=revision)
        return detect_layout(files, lambda name: json.loads(Path(hf_hub_download(
            source, name, revision=revision)).read_text()))
    except Exception:  # offline or unlisted: the cache, then the table of known repos
        pass
    if source in KNOWN_REPOS:
        name = KNOWN_REPOS[source]
        return Layout(name, f"{source} is published in the {name} layout")
    try:
        from huggingface_hub import hf_hub_download

        cached = {}
        for name in ("params.json", "config.json"):
            try:
                cached[name] = Path(hf_hub_download(source, name, revision=revision, local_files_only=True))
            except Exception:
                continue
        if "params.json" in cached:
            cached["consolidated.safetensors"] = cached["params.json"]  # the cache may hold only the config
        return detect_layout(cached, lambda name: json.loads(cached[name].read_text()))
    except ImportError:
        return Layout("unknown", "huggingface_hub is not installed")


def require_layout(engine: str, layout: Layout, source: str) -> None:
    """One line naming the layout found and the engine that reads it, when ``engine`` cannot."""
    if layout.reader == engine:
        return
    if layout.reader is None:
        raise EngineError(f"{source}: no checkpoint layout that an engine reads ({layout.detail}); engine "
                          f"{engine!r} reads Mistral's params.json + consolidated.safetensors or mamba-ssm's "
                          "config.json (d_model) + pytorch_model.bin")
    raise EngineError(f"{source}: checkpoint in the {layout.name} layout ({layout.detail}), which engine "
                      f"{engine!r} does not read; use engine {layout.reader!r}")


def mistral_config(params: Mapping[str, Any]) -> dict[str, Any]:
    """``MambaConfig`` fields from Mistral's ``params.json``, as mistral-inference's ``Mamba`` builds them."""
    missing = [k for k in _MISTRAL_KEYS if k not in params]
    if missing:
        raise EngineError(f"params.json lacks {', '.join(missing)} (Mistral's Mamba params need {', '.join(_MISTRAL_KEYS)})")
    if params.get("model_type", "mamba") != "mamba":
        raise EngineError(f"params.json has model_type {params['model_type']!r}; only Mistral's 'mamba' is read")
    return {"d_model": params["dim"], "n_layer": params["n_layers"], "vocab_size": params["vocab_size"],
            "ssm_cfg": {"ngroups": params["n_groups"], "layer": "Mamba2"}, "attn_layer_idx": [], "attn_cfg": {},
            "rms_norm": params["rms_norm"], "residual_in_fp32": params["residual_in_fp32"],
            "fused_add_norm": params["fused_add_norm"], "pad_vocab_size_multiple": params["pad_vocab_size_multiple"],
            "tie_embeddings": params["tie_embeddings"]}


def map_mistral_keys(state: Mapping[str, Any]) -> dict[str, Any]:
    """Mistral's keys (``model.`` + MambaLMHeadModel's, as its wrapper module names them) to mamba-ssm's."""
    foreign = [k for k in state if not k.startswith(MISTRAL_PREFIX)]
    if foreign:
        raise EngineError(f"consolidated.safetensors: key {foreign[0]!r} lacks Mistral's {MISTRAL_PREFIX!r} prefix")
    return {k[len(MISTRAL_PREFIX):]: v for k, v in state.items()}


def ssm_kind(config: Mapping[str, Any]) -> str:
    return dict(config.get("ssm_cfg") or {}).get("layer", "Mamba1")


def mamba2_dims(config: Mapping[str, Any]) -> dict[str, int]:
    """Mamba-2 mixer widths as ``Mamba2.__init__`` computes them (single process)."""
    cfg = {**_MAMBA2_DEFAULTS, **{k: v for k, v in dict(config.get("ssm_cfg") or {}).items() if k != "layer"}}
    d_inner = cfg["expand"] * config["d_model"]
    d_ssm = d_inner if cfg["d_ssm"] is None else cfg["d_ssm"]
    nheads = d_ssm // cfg["headdim"]
    conv_dim = d_ssm + 2 * cfg["ngroups"] * cfg["d_state"]
    return {"d_inner": d_inner, "d_ssm": d_ssm, "nheads": nheads, "conv_dim": conv_dim, "d_conv": cfg["d_conv"],
            "d_in_proj": 2 * d_inner + 2 * cfg["ngroups"] * cfg["d_state"] + nheads}


def state_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """``MambaLMHeadModel(MambaConfig(**config)).state_dict()`` names and shapes, without building it.

    The rule, read from mamba-ssm 2.3.2 (models/mixer_seq_simple.py, modules/block.py, mamba2.py,
    mamba_simple.py, mlp.py): RMSNorm has a weight and no bias, LayerNorm both; a tied lm_head is
    still listed under its own name.
    """
    if config.get("attn_layer_idx"):
        raise EngineError("attention layers (attn_layer_idx) are not supported by the mamba_ssm engine")
    d, n_layer = config["d_model"], config["n_layer"]
    vocab, mult = config["vocab_size"], config.get("pad_vocab_size_multiple", 8)
    vocab += (mult - vocab % mult) % mult
    rms = config.get("rms_norm", True)

    def norm(name: str) -> dict[str, tuple[int, ...]]:
        return {f"{name}.weight": (d,)} if rms else {f"{name}.weight": (d,), f"{name}.bias": (d,)}

    shapes: dict[str, tuple[int, ...]] = {"backbone.embedding.weight": (vocab, d)}
    ssm = {k: v for k, v in dict(config.get("ssm_cfg") or {}).items() if k != "layer"}
    for i in range(n_layer):
        p = f"backbone.layers.{i}."
        shapes.update(norm(p + "norm"))
        if ssm_kind(config) == "Mamba2":
            cfg, dims = {**_MAMBA2_DEFAULTS, **ssm}, mamba2_dims(config)
            mixer = {"in_proj.weight": (dims["d_in_proj"], d), "conv1d.weight": (dims["conv_dim"], 1, dims["d_conv"]),
                     "dt_bias": (dims["nheads"],), "A_log": (dims["nheads"],),
                     "D": (dims["d_ssm"] if cfg["D_has_hdim"] else dims["nheads"],), "out_proj.weight": (d, dims["d_inner"])}
            if cfg["rmsnorm"]:
                mixer["norm.weight"] = (dims["d_ssm"],)
            conv_dim, d_inner = dims["conv_dim"], dims["d_inner"]
            in_width = dims["d_in_proj"]
        else:
            cfg = {**_MAMBA1_DEFAULTS, **ssm}
            d_inner = cfg["expand"] * d
            conv_dim, in_width = d_inner, 2 * d_inner
            rank = math.ceil(d / 16) if cfg["dt_rank"] == "auto" else cfg["dt_rank"]
            mixer = {"in_proj.weight": (2 * d_inner, d), "conv1d.weight": (d_inner, 1, cfg["d_conv"]),
                     "x_proj.weight": (rank + 2 * cfg["d_state"], d_inner), "dt_proj.weight": (d_inner, rank),
                     "dt_proj.bias": (d_inner,), "A_log": (d_inner, cfg["d_state"]), "D": (d_inner,),
                     "out_proj.weight": (d, d_inner)}
        if cfg["conv_bias"]:
            mixer["conv1d.bias"] = (conv_dim,)
        if cfg["bias"]:
            mixer["in_proj.bias"], mixer["out_proj.bias"] = (in_width,), (d,)
        shapes.update({p + "mixer." + k: v for k, v in mixer.items()})
        if config.get("d_intermediate", 0):
            hidden = (config["d_intermediate"] + 127) // 128 * 128
            shapes.update(norm(p + "norm2"))
            shapes.update({p + "mlp.fc1.weight": (2 * hidden, d), p + "mlp.fc2.weight": (d, hidden)})
    shapes.update(norm("backbone.norm_f"))
    shapes["lm_head.weight"] = (vocab, d)
    return shapes


def mamba1_d_inner(config: Mapping[str, Any]) -> int:
    """d_inner of a Mamba-1 layer as ``Mamba.__init__`` computes it (expand x d_model)."""
    cfg = {**_MAMBA1_DEFAULTS, **{k: v for k, v in dict(config.get("ssm_cfg") or {}).items() if k != "layer"}}
    return int(cfg["expand"] * config["d_model"])


def ssd_token_limit(d_in_proj: int) -> int:
    """The longest forward mamba-ssm's SSD kernels take at this in_proj width: 2^31 / d_in_proj with a
    10 % margin, a multiple of their 256-token block. One rule for both engines that call them
    (``mamba_ssm`` here, ``hf`` for the Mamba-2 family in prefill.py)."""
    return int(CHUNK_MARGIN * INT32_LIMIT / d_in_proj) // SSD_CHUNK * SSD_CHUNK


def auto_prefill_chunk(config: Mapping[str, Any]) -> int:
    """The longest Mamba-2 forward that stays clear of the int32 offsets."""
    return ssd_token_limit(mamba2_dims(config)["d_in_proj"])


def resolve_prefill_chunk(config: Mapping[str, Any], requested: Any) -> tuple[int, str]:
    """(tokens per forward, why); 0 means one forward. ``requested`` is engine_args' value or None."""
    kind = ssm_kind(config)
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int) or requested < 0):
        raise EngineError(f"engine_args prefill_chunk must be a whole number of tokens >= 0 (0 = one forward); got {requested!r}")
    if kind != "Mamba2":  # Mamba-1: scans continued across chunks by mamba1_carry; any cut is exact
        if requested is not None:
            return requested, "engine_args" if requested else "engine_args: one forward"
        width = 2 * mamba1_d_inner(config)
        return ssd_token_limit(width), (f"auto: keeps the Mamba-1 in_proj output ({width} per token) under 2^31 "
                                        f"elements (x{CHUNK_MARGIN}, multiple of {SSD_CHUNK}); shorter prompts "
                                        "run one forward")
    if requested and requested % SSD_CHUNK:
        # the SSD kernels scan in blocks of 256: a cut elsewhere changes the bf16 arithmetic (64k tokens,
        # Codestral shape on the H200: 2.4 % relative on the next-token logits at chunks of 20,000, exact at 16,384)
        rounded = max(SSD_CHUNK, requested // SSD_CHUNK * SSD_CHUNK)
        return rounded, f"engine_args {requested}, rounded down to a multiple of {SSD_CHUNK} (the SSD kernels' block)"
    if requested is not None:
        return requested, "engine_args" if requested else "engine_args: one forward"
    d_in_proj = mamba2_dims(config)["d_in_proj"]
    return auto_prefill_chunk(config), (f"auto: int32 offset limit of mamba-ssm's SSD kernels at d_in_proj={d_in_proj} "
                                        f"(2^31/{d_in_proj} tokens, x{CHUNK_MARGIN}, multiple of {SSD_CHUNK})")
