from pathlib import Path

import pytest

from lcplugin.config.specs import load_spec_file, load_specs, select_specs
from lcplugin.errors import SpecError

STUDY_MODELS = {"llama-3.1-8b-instruct", "qwen2.5-7b-instruct", "mamba-2.8b", "mamba-codestral-7b",
                "jamba-reasoning-3b", "nemotron-h-8b-reasoning-128k", "zamba2-7b"}


def test_builtin_specs_cover_the_study_and_the_tiny_models():
    specs = load_specs()
    assert set(specs) >= STUDY_MODELS
    tiny = {n for n, s in specs.items() if s.is_builtin_tiny}
    assert {"tiny-llama", "tiny-mamba", "tiny-mamba2"} <= tiny
    assert any(specs[n].family == "hybrid" for n in tiny)
    assert all(not s.trust_remote_code for s in specs.values())


def test_qwen_yarn_factor_follows_the_context():
    qwen = load_specs()["qwen2.5-7b-instruct"]
    assert qwen.rope_for(32768) is None
    assert qwen.rope_for(65536)["factor"] == 2.0
    rope = qwen.rope_for(131072)
    assert rope == {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(text)
    return path


GOOD = 'name = "m"\nsource = "org/m"\nfamily = "ssm"\nengine = "hf"\nmax_context = "8k"\n'


def test_good_spec_parses(tmp_path):
    spec = load_spec_file(_write(tmp_path, GOOD))
    assert spec.trained_window == spec.hard_limit == 8192 and spec.family == "ssm" and spec.dtype == "bfloat16"


@pytest.mark.parametrize(("text", "field"), [
    (GOOD.replace('family = "ssm"', 'family = "rnn"'), "family"),
    (GOOD.replace('max_context = "8k"', 'max_context = "lots"'), "max_context"),
    (GOOD.replace('source = "org/m"\n', ""), "source"),
    (GOOD + "trust_remote_code = \"yes\"\n", "trust_remote_code"),
    (GOOD + "temprature = 0.1\n", "temprature"),
    (GOOD + '[rope_scaling]\ntype = "yarn"\n', "rope_scaling.original_max_position_embeddings"),
])
def test_malformed_spec_names_file_and_field(tmp_path, text, field):
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    assert str(path) in str(err.value) and f"'{field}'" in str(err.value)


def test_invalid_toml_names_file(tmp_path):
    path = _write(tmp_path, "name = \n")
    with pytest.raises(SpecError, match="not valid TOML") as err:
        load_spec_file(path)
    assert str(path) in str(err.value)


def test_unknown_model_lists_known_ones():
    with pytest.raises(SpecError, match="unknown model 'nope'.*tiny-llama"):
        select_specs(load_specs(), "tiny-llama,nope")


def test_user_folder_overrides_builtin(tmp_path):
    (tmp_path / "x.toml").write_text(GOOD.replace('name = "m"', 'name = "tiny-llama"'))
    assert load_specs([tmp_path])["tiny-llama"].source == "org/m"
