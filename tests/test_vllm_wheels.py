"""Issue 15: the scripts that carry vLLM's wheels to the device in parts work before device time is spent on
them. Fake wheels (random bytes, one larger than a part) are packed by scripts/gpu/vllm-wheels.sh with its
download skipped, every part is staged by scripts/gpu/vllm-install.sh into a folder standing in for
/tmp/vllm-parts, and the install joins and checks them and hands pip each wheel once (pip is a recorder)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

PART = 100_000  # bytes of wheels a part may hold
WHEELS = {  # file name: size; big_pkg is cut in three pieces
    "big_pkg-2.0-cp312-cp312-manylinux_2_28_x86_64.whl": 250_000,
    "alpha-1.0-py3-none-any.whl": 70_000,
    "Beta.Lib-0.66b2-py3-none-any.whl": 40_000,  # a name and a version pip writes otherwise than the pin
    "gamma-3.1-cp38-abi3-manylinux2014_x86_64.whl": 30_000,
    "delta-0.1.post7-py3-none-any.whl": 20_000,
    "epsilon-1.0-py2.py3-none-any.whl": 5_000,
}
PINS = ["big-pkg==2.0", "alpha==1.0", "beta-lib==0.66b2", "gamma==3.1", "delta==0.1.post7", "epsilon==1.0"]
STALE = "alpha-0.9-py3-none-any.whl"  # left over in the download folder from an older list: not packed


def run(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}  # only the test's own settings
    return subprocess.run(["bash", f"scripts/gpu/{script}", *args], cwd=REPO, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def packed(tmp_path: Path):
    rng = random.Random(15)
    dl, req = tmp_path / "dl", tmp_path / "req"
    dl.mkdir()
    req.mkdir()
    for name, size in {**WHEELS, STALE: 1_000}.items():
        (dl / name).write_bytes(rng.randbytes(size))
    (req / "requirements.txt").write_text("# pinned\n" + "\n".join(PINS) + "\n")
    recorder = tmp_path / "fake-pip"
    recorder.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path / "pip-args.txt"}\n')
    recorder.chmod(recorder.stat().st_mode | stat.S_IXUSR)
    env = {"VLLM_REQ_DIR": str(req), "VLLM_DL": str(dl), "VLLM_PARTS": str(tmp_path / "parts"),
           "VLLM_PART_BYTES": str(PART), "VLLM_SKIP_DOWNLOAD": "1", "VLLM_STAGE": str(tmp_path / "stage"),
           "VLLM_INSTALL_PIP": str(recorder), "VLLM_INSTALL_CHECK": "0"}
    out = run("vllm-wheels.sh", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    return tmp_path, env, out.stdout


def manifest_of(part: Path) -> dict:
    return json.loads((part / "manifest.json").read_text())


def parts_of(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "parts").iterdir() if p.is_dir())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_packing_fills_parts_up_to_the_size_and_cuts_the_large_wheel(packed) -> None:
    tmp_path, _, said = packed
    parts = parts_of(tmp_path)
    assert [p.name for p in parts] == [f"part-{i:02d}" for i in range(1, 6)]  # 415,000 bytes: no fewer
    manifests = [manifest_of(p) for p in parts]
    assert all(m == manifests[0] for m in manifests)  # every part carries the whole manifest
    manifest = manifests[0]
    assert manifest["parts"] == [p.name for p in parts]
    for part in parts:
        payload = [f for f in part.iterdir() if f.name != "manifest.json"]
        assert sum(f.stat().st_size for f in payload) <= PART, part
    wheels = {w["file"]: w for w in manifest["wheels"]}
    assert set(wheels) == set(WHEELS)  # the stale alpha 0.9 stays behind
    for name, size in WHEELS.items():
        data = (tmp_path / "dl" / name).read_bytes()
        assert (wheels[name]["size"], wheels[name]["sha256"]) == (size, sha(data))
        pieces = wheels[name]["pieces"]
        assert b"".join((tmp_path / "parts" / p["part"] / p["file"]).read_bytes() for p in pieces) == data
        for p in pieces:
            assert sha((tmp_path / "parts" / p["part"] / p["file"]).read_bytes()) == p["sha256"]
    big = wheels["big_pkg-2.0-cp312-cp312-manylinux_2_28_x86_64.whl"]["pieces"]
    assert [p["size"] for p in big] == [100_000, 100_000, 50_000]
    assert len({p["part"] for p in big}) == 3  # each piece in a part of its own
    assert said.count("scripts/gpu/vllm-install.sh stage") == 5


def test_packing_again_gives_the_same_set(packed) -> None:
    tmp_path, env, _ = packed
    first = manifest_of(tmp_path / "parts" / "part-01")
    (tmp_path / "parts" / "part-09").mkdir()  # a part of an older, larger packing: removed
    again = run("vllm-wheels.sh", env=env)
    assert again.returncode == 0, again.stderr
    assert manifest_of(tmp_path / "parts" / "part-01") == first
    assert [p.name for p in parts_of(tmp_path)] == first["parts"]


def test_of_two_wheels_for_one_pin_the_newest_is_packed(packed) -> None:
    tmp_path, env, _ = packed
    dl = tmp_path / "dl"
    older = dl / "gamma-3.1-cp38-abi3-manylinux_2_17_x86_64.whl"  # fetched once under other platform flags
    older.write_bytes(b"older")
    newest = dl / "gamma-3.1-cp38-abi3-manylinux2014_x86_64.whl"
    os.utime(older, (1_000_000, 1_000_000))
    os.utime(newest, (2_000_000, 2_000_000))
    out = run("vllm-wheels.sh", env=env)
    assert out.returncode == 0, out.stderr
    packed_files = [w["file"] for w in manifest_of(tmp_path / "parts" / "part-01")["wheels"]]
    assert newest.name in packed_files and older.name not in packed_files
    assert "2 wheels for gamma==3.1" in out.stdout


def test_a_pin_without_its_wheel_fails_naming_it(packed) -> None:
    tmp_path, env, _ = packed
    (tmp_path / "dl" / "gamma-3.1-cp38-abi3-manylinux2014_x86_64.whl").unlink()
    out = run("vllm-wheels.sh", env=env)
    assert out.returncode != 0
    assert "gamma==3.1" in out.stderr


def test_staging_every_part_installs_each_wheel_once_byte_for_byte(packed) -> None:
    tmp_path, env, _ = packed
    parts = parts_of(tmp_path)
    for i, part in enumerate(parts, 1):
        out = run("vllm-install.sh", "stage", str(part), env=env)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"{i} of {len(parts)} parts staged" in out.stdout
        if i < len(parts):
            assert not (tmp_path / "pip-args.txt").exists()  # nothing installed before the last part
    args = (tmp_path / "pip-args.txt").read_text().split("\n")[:-1]
    assert args[:5] == ["install", "-q", "--no-deps", "--no-index", "--no-compile"]
    installed = [Path(a) for a in args[5:]]
    assert sorted(p.name for p in installed) == sorted(WHEELS)  # each exactly once
    for path in installed:
        assert path.read_bytes() == (tmp_path / "dl" / path.name).read_bytes()
    assert f"installed {len(WHEELS)} wheels" in out.stdout
    assert "1 joined from pieces" in out.stdout


def test_a_part_missing_stops_the_install_naming_it(packed) -> None:
    tmp_path, env, _ = packed
    for part in parts_of(tmp_path)[:-1]:
        assert run("vllm-install.sh", "stage", str(part), env=env).returncode == 0
    out = run("vllm-install.sh", "install", env=env)
    assert out.returncode != 0
    assert "missing part-05" in out.stderr
    assert not (tmp_path / "pip-args.txt").exists()


@pytest.mark.parametrize("harm", ["corrupt", "delete"])
def test_a_bad_or_missing_piece_fails_in_one_line_naming_it(packed, harm: str) -> None:
    tmp_path, env, _ = packed
    stage = tmp_path / "stage"
    env = {**env, "VLLM_AUTO_INSTALL": "0"}
    for part in parts_of(tmp_path):
        assert run("vllm-install.sh", "stage", str(part), env=env).returncode == 0
    piece = manifest_of(stage)["wheels"][0]["pieces"][1]  # big_pkg's second piece, already staged
    target = stage / piece["part"] / piece["file"]
    if harm == "corrupt":
        data = bytearray(target.read_bytes())
        data[500] ^= 0xFF
        target.write_bytes(bytes(data))
    else:
        target.unlink()
    out = run("vllm-install.sh", "install", env=env)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and piece["file"] in lines[0], out.stderr
    assert ("sha256 mismatch" if harm == "corrupt" else "missing") in lines[0]
    assert not (tmp_path / "pip-args.txt").exists()


@pytest.mark.parametrize("harm", ["truncate", "delete"])
def test_a_part_damaged_on_the_way_fails_at_staging(packed, harm: str) -> None:
    tmp_path, env, _ = packed
    part = parts_of(tmp_path)[-1]
    victim = next(f for f in part.iterdir() if f.name != "manifest.json")
    if harm == "truncate":
        victim.write_bytes(victim.read_bytes()[:-1])
    else:
        victim.unlink()
    out = run("vllm-install.sh", "stage", str(part), env=env)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and victim.name in lines[0], out.stderr
    assert ("sha256 mismatch" if harm == "truncate" else "missing") in lines[0]
    assert not (tmp_path / "stage" / part.name).exists()  # not counted as staged


def test_parts_of_another_packing_are_not_mixed(packed) -> None:
    tmp_path, env, _ = packed
    assert run("vllm-install.sh", "stage", str(tmp_path / "parts" / "part-01"), env=env).returncode == 0
    shutil.copy(tmp_path / "dl" / "alpha-1.0-py3-none-any.whl", tmp_path / "dl" / "zeta-1.0-py3-none-any.whl")
    (tmp_path / "req" / "requirements.txt").write_text("\n".join([*PINS, "zeta==1.0"]) + "\n")
    assert run("vllm-wheels.sh", env=env).returncode == 0
    out = run("vllm-install.sh", "stage", str(tmp_path / "parts" / "part-02"), env=env)
    assert out.returncode == 0, out.stderr
    assert "another packing" in out.stdout
    assert sorted(p.name for p in (tmp_path / "stage").glob("part-*")) == ["part-02"]
