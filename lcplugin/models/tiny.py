"""Built-in tiny models: real architectures, random seeded weights, no download.

A tiny model is built from a transformers config on first use, saved with ``save_pretrained`` into
a cache folder, and from then on loaded through exactly the code path a real checkpoint takes
(``from_pretrained(folder)``). Its tokenizer is byte-level and built programmatically, with a chat
template and BOS handling shaped like Llama-3's, so truncation and template-overhead code meet the
same situations they meet on real models.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

SEED = 1234
VOCAB = 272  # 256 bytes + 5 specials, padded to a multiple of 16
SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|eos|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _recipes() -> dict[str, Callable[[], Any]]:
    import transformers as T

    common = dict(vocab_size=VOCAB, bos_token_id=256, eos_token_id=257, pad_token_id=258)
    return {
        # head_dim 64: vLLM's CPU attention (the cross-engine check) supports no smaller heads
        "tiny-llama": lambda: T.LlamaConfig(
            hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=4096, **common),
        "tiny-mamba": lambda: T.MambaConfig(
            hidden_size=64, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4, **common),
        "tiny-mamba2": lambda: T.Mamba2Config(
            hidden_size=64, state_size=16, num_hidden_layers=2, expand=2, head_dim=16, num_heads=8,
            n_groups=1, chunk_size=64, **common),
        "tiny-zamba2": lambda: T.Zamba2Config(
            hidden_size=64, num_hidden_layers=4, layers_block_type=["mamba", "mamba", "hybrid", "mamba"],
            mamba_d_state=16, n_mamba_heads=8, num_attention_heads=4, num_key_value_heads=4,
            intermediate_size=128, max_position_embeddings=4096, chunk_size=64, **common),
        "tiny-nemotron-h": lambda: T.NemotronHConfig(
            layers_block_type=["mamba", "attention", "mamba", "mlp"], hidden_size=64, mamba_num_heads=8,
            mamba_head_dim=16, ssm_state_size=16, n_groups=1, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, intermediate_size=128, max_position_embeddings=4096, chunk_size=64, **common),
        # Jamba's layout: Mamba-1 mixers (with dt/B/C norms), one attention layer, a two-expert MoE layer
        "tiny-jamba": lambda: T.JambaConfig(
            hidden_size=64, num_hidden_layers=4, attn_layer_period=4, attn_layer_offset=2, num_experts=2,
            num_experts_per_tok=1, expert_layer_period=2, expert_layer_offset=1, mamba_d_state=8, mamba_expand=2,
            mamba_d_conv=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
            max_position_embeddings=4096, **common),
    }


def recipe_config(name: str) -> Any:
    """The transformers config of built-in ``name``, without building or saving the model (what the plan
    reads its layers from); None for a name that is not a built-in."""
    recipe = _recipes().get(name)
    return recipe() if recipe else None


def cache_root() -> Path:
    return Path(os.environ.get("LCPLUGIN_CACHE", Path.home() / ".cache" / "lcplugin"))


def build_tokenizer() -> Any:
    """A byte-level tokenizer (every UTF-8 byte is a token) with Llama-3-like BOS and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_chars = [chr(c) for c in sorted(ord(ch) for ch in alphabet)]
    vocab = {ch: i for i, ch in enumerate(byte_chars)}
    assert len(vocab) == 256
    for i, tok in enumerate(SPECIALS):
        vocab[tok] = 256 + i
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(SPECIALS)
    core.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A", pair="<|bos|> $A $B", special_tokens=[("<|bos|>", 256)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
        model_max_length=1 << 20)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _fingerprint(name: str) -> str:
    import transformers

    config = _recipes()[name]().to_json_string(use_diff=False)
    blob = json.dumps([config, SEED, CHAT_TEMPLATE, SPECIALS, transformers.__version__])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def materialize(name: str) -> Path:
    """Return the folder of tiny model ``name``, building and saving it on first use.

    The folder is written under a temporary name and renamed into place, so concurrent sessions
    (pytest-xdist workers) never see a half-written checkpoint.
    """
    recipes = _recipes()
    if name not in recipes:
        from ..errors import SpecError

        raise SpecError(f"unknown built-in model 'builtin:{name}'; built-ins: {', '.join(sorted(recipes))}")
    target = cache_root() / "tiny" / f"{name}-{_fingerprint(name)}"
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        torch.manual_seed(SEED)
        model = AutoModelForCausalLM.from_config(recipes[name]())
        model.save_pretrained(tmp)
        build_tokenizer().save_pretrained(tmp)
        with contextlib.suppress(OSError):  # another process won the race; its copy is identical
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
