"""``python -m lcplugin prompt`` prints exactly what the model receives (byte for byte)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import REPO, shared

TEMPLATE = (REPO / "tests" / "data" / "longbench_v2_0shot.txt").read_text(encoding="utf-8")


def _independent_rendering(tok, item: dict, ctx: int, new_tokens: int = 128, max_len: int | None = None) -> str:
    """The official steps, written out here apart from lcplugin's code (``max_len``: the official budget)."""
    prompt = TEMPLATE.replace("$DOC$", item["context"].strip()).replace("$Q$", item["question"].strip())
    for letter in "ABCD":
        prompt = prompt.replace(f"$C_{letter}$", item[f"choice_{letter}"].strip())
    empty = tok.apply_chat_template([{"role": "user", "content": ""}], tokenize=False, add_generation_prompt=True)
    overhead = len(tok(empty, add_special_tokens=False)["input_ids"])
    limit = ctx - new_tokens
    max_len = min(limit - overhead, max_len) if max_len else limit - overhead
    ids = tok(prompt)["input_ids"]
    while True:
        body = prompt
        if len(ids) > max_len:
            body = tok.decode(ids[:max_len // 2] + ids[-max_len // 2:], skip_special_tokens=True)
        text = tok.apply_chat_template([{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True)
        n = len(tok(text, add_special_tokens=False)["input_ids"])
        if n <= limit:
            return text
        max_len -= n - limit


@pytest.mark.parametrize(("index", "ctx"), [(0, "8k"), (2, "32k"), (16, "16k")])
def test_prompt_matches_an_independent_rendering(index, ctx):
    from transformers import AutoTokenizer

    data = shared("longbench_v2", "sample18.jsonl")
    tok_dir = shared("tokenizers", "llama3.1")
    item = json.loads(data.read_text().splitlines()[index])
    cmd = [sys.executable, "-m", "lcplugin", "prompt", "longbench_v2", "--data", str(data), "--id", item["_id"],
           "--ctx", ctx, "--tokenizer", str(tok_dir)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode()
    tok = AutoTokenizer.from_pretrained(tok_dir)
    expected = _independent_rendering(tok, item, int(ctx[:-1]) * 1024)
    assert out.stdout == expected.encode("utf-8")
    ids = subprocess.run([*cmd, "--ids"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert json.loads(ids.stdout) == tok(expected, add_special_tokens=False)["input_ids"]


def test_prompt_unknown_id_is_one_line():
    data = shared("longbench_v2", "sample18.jsonl")
    out = subprocess.run([sys.executable, "-m", "lcplugin", "prompt", "longbench_v2", "--data", str(data), "--id",
                          "nope", "--ctx", "8k", "--tokenizer", str(shared("tokenizers", "llama3.1"))],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no item with id 'nope'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("budget", ["official", "context"])
def test_prompt_takes_the_budget(tmp_path, budget):
    from lcplugin.benchmarks.synthetic import synthetic_longbench
    from lcplugin.benchmarks.truncation import official_max_len
    from lcplugin.models.tiny import build_tokenizer

    raw = max(synthetic_longbench(8), key=lambda r: len(r["context"]))
    data = tmp_path / "lb.jsonl"
    data.write_text(json.dumps(raw) + "\n")
    tok = build_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    cmd = [sys.executable, "-m", "lcplugin", "prompt", "longbench_v2", "--data", str(data), "--id", raw["_id"],
           "--ctx", "4k", "--tokenizer", str(tmp_path / "tok"), "--budget", budget]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    expected = _independent_rendering(tok, raw, 4096, max_len=official_max_len(4096) if budget == "official" else None)
    assert out.stdout == expected.encode("utf-8")
    bad = subprocess.run([*cmd[:-1], "120k"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--budget" in bad.stderr and "invalid choice" in bad.stderr
