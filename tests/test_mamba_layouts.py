"""Checkpoint layouts and the prefill-chunk arithmetic of the mamba_ssm engine, on CPU.

Random checkpoints are written in each exact layout (tiny dims); the load itself runs on the GPU
(scripts/gpu/check_mamba_chunked.py).
"""

import json
from pathlib import Path

import pytest

from lcplugin.config.specs import load_specs
from lcplugin.engines import layouts
from lcplugin.errors import EngineError

# Mamba-Codestral-7B-v0.1's params.json as published (the keys mistral-inference's MambaArgs reads)
CODESTRAL_PARAMS = {"dim": 4096, "n_layers": 64, "vocab_size": 32768, "n_groups": 8, "rms_norm": True,
                    "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 1,
                    "tie_embeddings": False, "model_type": "mamba"}
TINY_PARAMS = {**CODESTRAL_PARAMS, "dim": 64, "n_layers": 2, "vocab_size": 100, "n_groups": 2}


def _write_mistral(folder: Path, params: dict) -> dict:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps(params))
    (folder / "tokenizer.model.v3").write_bytes(b"")
    shapes = layouts.state_shapes(layouts.mistral_config(params))
    state = {layouts.MISTRAL_PREFIX + k: torch.randn(s) for k, s in shapes.items()}
    save_file(state, str(folder / "consolidated.safetensors"))
    return state


def test_codestral_params_become_the_mamba_config_mistral_inference_builds():
    cfg = layouts.mistral_config(CODESTRAL_PARAMS)
    assert cfg == {"d_model": 4096, "n_layer": 64, "vocab_size": 32768,
                   "ssm_cfg": {"ngroups": 8, "layer": "Mamba2"}, "attn_layer_idx": [], "attn_cfg": {},
                   "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
                   "pad_vocab_size_multiple": 1, "tie_embeddings": False}
    assert layouts.mamba2_dims(cfg)["d_in_proj"] == 18560  # the width the issue measured
    with pytest.raises(EngineError, match="params.json lacks n_groups"):
        layouts.mistral_config({k: v for k, v in CODESTRAL_PARAMS.items() if k != "n_groups"})


def test_mistral_checkpoint_is_detected_and_its_keys_map_onto_mamba_ssm_names(tmp_path):
    from safetensors.torch import load_file

    _write_mistral(tmp_path / "m", TINY_PARAMS)
    assert layouts.source_layout(str(tmp_path / "m")).name == "mistral"
    mapped = layouts.map_mistral_keys(load_file(str(tmp_path / "m" / "consolidated.safetensors")))
    cfg = layouts.mistral_config(TINY_PARAMS)
    expected = layouts.state_shapes(cfg)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == expected
    assert "backbone.layers.1.mixer.in_proj.weight" in mapped and "lm_head.weight" in mapped
    with pytest.raises(EngineError, match="lacks Mistral's 'model.' prefix"):
        layouts.map_mistral_keys({"backbone.embedding.weight": 0})


@pytest.mark.parametrize("kind", ["Mamba2", "Mamba1"])
def test_key_rule_matches_transformers_port_of_mamba_ssm(kind):
    """transformers' Mamba/Mamba2 ports keep mamba-ssm's parameter names (its converters rename only
    backbone.embedding -> backbone.embeddings), so they cross-check the naming and shape rule."""
    import transformers

    if kind == "Mamba2":
        cfg = {"d_model": 64, "n_layer": 2, "vocab_size": 96, "pad_vocab_size_multiple": 8, "tie_embeddings": False,
               "ssm_cfg": {"layer": "Mamba2", "ngroups": 2, "d_state": 16, "headdim": 16}}
        hf = transformers.Mamba2Config(hidden_size=64, num_hidden_layers=2, vocab_size=96, n_groups=2, state_size=16,
                                       head_dim=16, num_heads=8, expand=2, conv_kernel=4, use_bias=False,
                                       use_conv_bias=True, tie_word_embeddings=False)
        model = transformers.Mamba2ForCausalLM(hf)
    else:
        cfg = {"d_model": 64, "n_layer": 2, "vocab_size": 96, "pad_vocab_size_multiple": 8, "ssm_cfg": {}}
        hf = transformers.MambaConfig(hidden_size=64, num_hidden_layers=2, vocab_size=96, state_size=16,
                                      expand=2, conv_kernel=4, time_step_rank=4, tie_word_embeddings=False)
        model = transformers.MambaForCausalLM(hf)
    theirs = {k.replace("backbone.embeddings.", "backbone.embedding."): tuple(v.shape)
              for k, v in model.state_dict().items()}
    assert layouts.state_shapes(cfg) == theirs


def test_each_layout_is_detected_from_its_files(tmp_path):
    ssm = tmp_path / "ssm"
    ssm.mkdir()
    (ssm / "config.json").write_text(json.dumps({"d_model": 64, "n_layer": 2, "vocab_size": 100, "ssm_cfg": {}}))
    (ssm / "pytorch_model.bin").write_bytes(b"")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "mamba", "hidden_size": 64}))
    (hf / "model.safetensors").write_bytes(b"")
    assert layouts.source_layout(str(ssm)).name == "mamba_ssm"
    found = layouts.source_layout(str(hf))
    assert found.name == "transformers"
    layouts.require_layout("hf", found, str(hf))
    with pytest.raises(EngineError) as err:
        layouts.require_layout("mamba_ssm", found, str(hf))
    message = str(err.value)
    assert "\n" not in message and "model_type 'mamba'" in message and "use engine 'hf'" in message
    with pytest.raises(EngineError, match="use engine 'mamba_ssm'"):
        layouts.require_layout("hf", layouts.source_layout(str(ssm)), str(ssm))
    with pytest.raises(EngineError, match="no checkpoint layout"):
        layouts.require_layout("mamba_ssm", layouts.source_layout(str(tmp_path)), str(tmp_path))


def test_every_builtin_spec_points_at_a_layout_its_engine_reads(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real = [s for s in load_specs().values() if not s.is_builtin_tiny]
    assert len(real) == 7
    for spec in real:
        assert spec.source in layouts.KNOWN_REPOS, spec.name
        layout = layouts.source_layout(spec.source)
        assert layout.reader == spec.engine, (spec.name, layout)


def test_auto_chunk_stays_under_the_int32_limit_of_the_ssd_kernels():
    cfg = layouts.mistral_config(CODESTRAL_PARAMS)
    chunk, why = layouts.resolve_prefill_chunk(cfg, None)
    assert chunk == 103936 and chunk % 256 == 0  # 0.9 * 2^31 / 18560 = 104,135 -> 406 * 256
    assert chunk * 18560 < 2**31 and "d_in_proj=18560" in why
    assert layouts.resolve_prefill_chunk(cfg, 4096) == (4096, "engine_args")
    assert layouts.resolve_prefill_chunk(cfg, 0)[0] == 0
    with pytest.raises(EngineError, match="whole number"):
        layouts.resolve_prefill_chunk(cfg, -1)


def test_an_explicit_chunk_is_rounded_to_the_ssd_block() -> None:
    from lcplugin.engines.layouts import resolve_prefill_chunk

    config = {"d_model": 64, "n_layer": 2, "vocab_size": 128,
              "ssm_cfg": {"layer": "Mamba2", "ngroups": 1, "d_state": 16, "headdim": 16}}
    assert resolve_prefill_chunk(config, 20000)[0] == 19968
    assert resolve_prefill_chunk(config, 16384) == (16384, "engine_args")
    assert resolve_prefill_chunk(config, 100)[0] == 256
