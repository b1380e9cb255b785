"""Random-weight checkpoints in real models' shapes, for speed and memory figures.

A model with random weights costs exactly what the real one costs (the same matrices, the same
kernels), so every speed and memory figure can be measured without the weights; quality figures
cannot, and are never reported from these. Each checkpoint is written with the library's own
``save_pretrained`` and read back by the suite through the normal loading path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    # transformers format (engine hf)
    "llama-3.1-8b": {"format": "hf", "config": dict(
        model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
        rms_norm_eps=1e-5, bos_token_id=128000, eos_token_id=[128001, 128008, 128009], tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})},
    # small enough for a CPU: the suite-versus-raw overhead check runs anywhere (pair: Mistral v3 tokenizer)
    "smollm2-135m": {"format": "hf", "config": dict(
        model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, bos_token_id=1, eos_token_id=2,
        tie_word_embeddings=True)},
    "nemotron-h-8b": {"format": "hf", "config": dict(
        model_type="nemotron_h", hidden_size=4096, vocab_size=131072,
        layers_block_type=[{"M": "mamba", "*": "attention", "-": "mlp"}[c]
                           for c in "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-"], intermediate_size=21504,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, mamba_num_heads=128, mamba_head_dim=64,
        ssm_state_size=128, n_groups=8, max_position_embeddings=131072)},
    # Shapes below from the models' published configs; where a field was not at hand it is marked "approx."
    # (speed and memory depend on the matrix sizes, which are the published ones).
    "qwen2.5-7b": {"format": "hf", "config": dict(
        model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, max_position_embeddings=131072,
        rms_norm_eps=1e-6, bos_token_id=151643, eos_token_id=[151645, 151643], tie_word_embeddings=False,
        # YaRN to 128k, as the suite's Qwen spec asks for at 128k (factor = 131072 / 32768)
        rope_parameters={"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                         "original_max_position_embeddings": 32768})},
    "mamba-2.8b-hf": {"format": "hf", "config": dict(  # state-spaces/mamba-2.8b-hf: transformers' Mamba-1
        model_type="mamba", hidden_size=2560, num_hidden_layers=64, vocab_size=50280, state_size=16, expand=2,
        conv_kernel=4, use_conv_bias=True, residual_in_fp32=True, bos_token_id=0, eos_token_id=0)},
    "jamba-reasoning-3b": {"format": "hf", "config": dict(  # 28 layers, 2 of them attention (approx. heads)
        model_type="jamba", hidden_size=2560, intermediate_size=8192, num_hidden_layers=28,
        num_attention_heads=20, num_key_value_heads=4, attn_layer_period=14, attn_layer_offset=7, num_experts=1,
        expert_layer_period=1, expert_layer_offset=0, mamba_d_state=16, mamba_expand=2, vocab_size=65536,
        max_position_embeddings=262144, tie_word_embeddings=False)},
    "zamba2-7b": {"format": "hf", "config": dict(  # Mamba-2 backbone, 2 shared attention blocks (approx. pattern)
        model_type="zamba2", hidden_size=3584, num_hidden_layers=81, mamba_d_state=64, mamba_ngroups=2,
        n_mamba_heads=112, intermediate_size=14336, num_attention_heads=32, num_mem_blocks=2,
        use_shared_attention_adapter=True, use_mem_rope=True, max_position_embeddings=131072,
        # 32,000 in the real model; 32,768 so the Mistral v3 tokenizer's ids fit (the embedding's cost is nil)
        vocab_size=32768,
        layers_block_type=["hybrid" if i % 6 == 5 else "mamba" for i in range(81)], tie_word_embeddings=True)},
    # transformers' Mamba-2 layout of the Codestral shape, for engines that read that layout (vLLM's Mamba2ForCausalLM)
    "mamba-codestral-7b-hf": {"format": "hf", "config": dict(
        model_type="mamba2", hidden_size=4096, num_hidden_layers=64, vocab_size=32768, state_size=128, n_groups=8,
        head_dim=64, num_heads=128, expand=2, conv_kernel=4, chunk_size=256, residual_in_fp32=True,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)},
    # mamba-ssm format (engine mamba_ssm)
    "mamba-2.8b": {"format": "mamba_ssm", "config": dict(
        d_model=2560, n_layer=64, vocab_size=50277, ssm_cfg={}, rms_norm=True, residual_in_fp32=True,
        fused_add_norm=True, pad_vocab_size_multiple=8)},
    "mamba-codestral-7b": {"format": "mamba_ssm", "config": dict(
        d_model=4096, n_layer=64, vocab_size=32768, ssm_cfg={"layer": "Mamba2", "ngroups": 8, "d_state": 128,
                                                              "headdim": 64}, rms_norm=True, residual_in_fp32=True,
        fused_add_norm=True, pad_vocab_size_multiple=8, tie_embeddings=False)},
}


def hf_config(shape: str) -> Any:
    """The transformers config of an ``hf``-format shape."""
    from transformers import AutoConfig

    spec = SHAPES[shape]
    if spec["format"] != "hf":
        raise ValueError(f"shape {shape!r} is in {spec['format']} format, not transformers'")
    cfg = dict(spec["config"])
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def build(shape: str, device: str = "cuda", dtype: str = "bfloat16", seed: int = 0) -> Any:
    """A random-weight transformers model of ``shape`` in memory, in eval mode (nothing written):
    for GPU checks that need the model, not a checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config(shape), dtype=getattr(torch, dtype))
    return model.eval()


def make(shape: str, out: Path, tokenizer: Path | None = None, device: str = "cuda", seed: int = 0) -> Path:
    """Write a random-weight checkpoint of ``shape`` into ``out`` (bf16), with a tokenizer if given."""
    import torch

    spec = SHAPES[shape]
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    if spec["format"] == "hf":
        model = build(shape, device=device, seed=seed)
        model.save_pretrained(out)
    else:
        from mamba_ssm.models.config_mamba import MambaConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

        model = MambaLMHeadModel(MambaConfig(**spec["config"]), device=device, dtype=torch.bfloat16)
        model.save_pretrained(str(out))
    if tokenizer is not None:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(tokenizer).save_pretrained(out)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out
