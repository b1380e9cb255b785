#!/usr/bin/env bash
# Issue 15, on the device (no network): installs vLLM 0.26.0 from the parts that scripts/gpu/vllm-wheels.sh
# packed here (.vllm-parts/part-01 ... part-NN, at most 60 MiB of wheels each, git-ignored), one part a call.
#   bash scripts/gpu/vllm-install.sh stage .vllm-parts/part-03
#       copies the carried part to $VLLM_STAGE/part-03 (/tmp/vllm-parts) and checks its files against its
#       manifest.json; once every part of the manifest is there, goes on to install (VLLM_AUTO_INSTALL=0: not)
#   bash scripts/gpu/vllm-install.sh install
#       joins the pieces of the split wheels, checks every size and sha256, installs all wheels with
#       `python3 -m pip install -q --no-deps --no-index --no-compile` (VLLM_INSTALL_PIP replaces
#       `python3 -m pip`), checks `from vllm import LLM` (VLLM_INSTALL_CHECK=0: not) and prints the versions
#       of vllm, torch, transformers, flashinfer and triton, and the seconds the install took
#   bash scripts/gpu/vllm-install.sh status     # which parts are staged
# A missing part or piece, or a size or sha256 that is not the manifest's, stops it with one line naming it.
#
# The device calls (the `run` tool) for the packing of 2026-11-30: 109 wheels, 469.5 MiB, eight parts, set
# 21a16593d3de787d (vllm-wheels.sh prints the list for the packing at hand). Each carries one part (60 MiB
# and its 50 KB manifest, plus the working tree: under the 64 MiB a call). Back to back on one machine: /tmp
# there lasts only while the machine is held, which ends 30 s after a call returns and 30 minutes after it
# started in any case.
#   1. command: bash scripts/gpu/vllm-install.sh stage .vllm-parts/part-01   carry: [".vllm-parts/part-01"]
#   2. command: bash scripts/gpu/vllm-install.sh stage .vllm-parts/part-02   carry: [".vllm-parts/part-02"]
#   3. command: bash scripts/gpu/vllm-install.sh stage .vllm-parts/part-03   carry: [".vllm-parts/part-03"]
#   4. command: bash scripts/gpu/vllm-install.sh stage .vllm-parts/part-04   carry: [".vllm-parts/part-04"]
#   5. command: bash scripts/gpu/vllm-install.sh stage .vllm-parts/part-05   carry: [".vllm-parts/part-05"]
#   6. command: bash scripts/gpu/vllm-install.sh stage .vllm-parts/part-06   carry: [".vllm-parts/part-06"]
#   7. command: bash scripts/gpu/vllm-install.sh stage .vllm-parts/part-07   carry: [".vllm-parts/part-07"]
#   8. command: bash scripts/gpu/vllm-install.sh stage .vllm-parts/part-08   carry: [".vllm-parts/part-08"]
#      The last part completes the set: the same call joins, checks and installs (about 25 s). The vLLM
#      work can follow in that command (`... stage .vllm-parts/part-08 && python3 ...`), or in the next
#      call within 30 s: the install lives only as long as the machine.
#   Each stage call prints "N of M parts staged". A count lower than the calls made so far means the
#   machine went back in between (a fresh one is bare): begin again at part-01. `install` (no carry)
#   repeats the last step alone, e.g. after VLLM_AUTO_INSTALL=0.
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGE=${VLLM_STAGE:-/tmp/vllm-parts}
export STAGE

parts() {  # parts stage PART | install | status: the file work, in Python (exit 10: parts still missing)
  python3 - "$@" <<'PY'
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

stage = Path(os.environ["STAGE"])
MIB = 1024 * 1024


def die(message: str) -> None:
    print(f"vllm-install: {message}", file=sys.stderr)
    sys.exit(1)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def check(path: Path, entry: dict, where: str) -> None:
    if not path.is_file():
        die(f"missing {entry['file']} ({where})")
    if path.stat().st_size != entry["size"] or sha256(path) != entry["sha256"]:
        die(f"sha256 mismatch: {entry['file']} ({where}: {path})")


def load(path: Path, hint: str) -> dict:
    if not path.is_file():
        die(f"no {path}: {hint}")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        die(f"unreadable {path}: {exc}")


def staged(manifest: dict) -> list[str]:
    return [p for p in manifest["parts"] if (stage / p / "manifest.json").is_file()]


def report(manifest: dict) -> int:
    have = staged(manifest)
    missing = [p for p in manifest["parts"] if p not in have]
    print(f"{len(have)} of {len(manifest['parts'])} parts staged in {stage} (set {manifest['set']})"
          + (f"; missing {' '.join(missing)}" if missing else ""))
    return 10 if missing else 0


mode = sys.argv[1]
if mode == "stage":
    src = Path(sys.argv[2])
    manifest = load(src / "manifest.json", "is the part folder named in the call's carry?")
    name = src.resolve().name
    if name not in manifest["parts"]:
        die(f"{src} is not a part of its manifest ({' '.join(manifest['parts'])})")
    known = stage / "manifest.json"
    if known.is_file() and (old_set := load(known, "")["set"]) != manifest["set"]:
        print(f"{stage} held parts of another packing (set {old_set}): cleared")
        for old in [*stage.glob("part-*"), *stage.glob(".part-*.tmp"), stage / "wheels"]:
            shutil.rmtree(old, ignore_errors=True)
        known.unlink()
    stage.mkdir(parents=True, exist_ok=True)
    tmp, dest = stage / f".{name}.tmp", stage / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    pieces = [p for w in manifest["wheels"] for p in w["pieces"] if p["part"] == name]
    for piece in pieces:
        if not (src / piece["file"]).is_file():
            die(f"missing {piece['file']} ({src})")
        shutil.copyfile(src / piece["file"], tmp / piece["file"])
        check(tmp / piece["file"], piece, name)
    shutil.copyfile(src / "manifest.json", tmp / "manifest.json")  # last: it marks the part as whole
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    shutil.copyfile(src / "manifest.json", known)
    size = sum(p["size"] for p in pieces)
    print(f"staged {name}: {len(pieces)} files, {size / MIB:.1f} MiB")
    sys.exit(report(manifest))
manifest = load(stage / "manifest.json", "nothing staged (a fresh machine is bare): stage part-01 first")
if mode == "status":
    sys.exit(report(manifest))
# install: every part, every piece, every whole wheel checked; split wheels joined into wheels/
missing = [p for p in manifest["parts"] if p not in staged(manifest)]
if missing:
    die(f"missing {' '.join(missing)} of {len(manifest['parts'])} parts: stage them first")
out = stage / "wheels"
out.mkdir(exist_ok=True)
paths, joined = [], 0
for wheel in manifest["wheels"]:
    dest = out / wheel["file"]
    if len(wheel["pieces"]) == 1:
        piece = wheel["pieces"][0]
        dest = stage / piece["part"] / piece["file"]
        check(dest, wheel, piece["part"])
    else:
        for piece in wheel["pieces"]:
            check(stage / piece["part"] / piece["file"], piece, piece["part"])
        tmp = out / f".{wheel['file']}.tmp"
        with tmp.open("wb") as fh:
            for piece in wheel["pieces"]:
                with (stage / piece["part"] / piece["file"]).open("rb") as src:
                    shutil.copyfileobj(src, fh, MIB)
        whole = f"{wheel['file']} (joined from {len(wheel['pieces'])} pieces)"
        check(tmp, {**wheel, "file": whole}, "joined")
        tmp.rename(dest)
        joined += 1
    paths.append(str(dest))
(stage / "wheels.txt").write_text("\n".join(paths) + "\n")
total = sum(w["size"] for w in manifest["wheels"])
print(f"checked {len(paths)} wheels, {total / MIB:.1f} MiB ({joined} joined from pieces)")
PY
}

install() {
  local t0=$SECONDS pip wheels
  parts install
  mapfile -t wheels < "$STAGE/wheels.txt"
  read -r -a pip <<< "${VLLM_INSTALL_PIP:-python3 -m pip}"
  "${pip[@]}" install -q --no-deps --no-index --no-compile "${wheels[@]}"
  echo "installed ${#wheels[@]} wheels in $((SECONDS - t0)) s (joining and checking included)"
  [ "${VLLM_INSTALL_CHECK:-1}" = 0 ] && return 0
  python3 - <<'PY'
import importlib.metadata as md
import time

t0 = time.time()
from vllm import LLM  # (a plain `import vllm` passes even when the engine lacks a dependency)

print(f"from vllm import LLM: ok in {time.time() - t0:.1f} s")
import torch

versions = []
for dist in ("vllm", "torch", "transformers", "flashinfer-python", "triton"):
    try:
        versions.append(f"{dist} {md.version(dist)}")
    except md.PackageNotFoundError:
        versions.append(f"{dist} absent")
print(", ".join(versions) + f"; CUDA {torch.version.cuda}")
try:
    import flashinfer

    print("import flashinfer: ok")
except Exception as exc:  # (reported, not fatal: vLLM's sampler imports it when it samples)
    print(f"import flashinfer: {type(exc).__name__}: {exc}")
PY
}

case "${1:-}" in
  stage)
    rc=0
    parts stage "${2:?stage needs the carried part folder, e.g. .vllm-parts/part-03}" || rc=$?
    if [ "$rc" -eq 0 ] && [ "${VLLM_AUTO_INSTALL:-1}" != 0 ]; then install; exit; fi
    [ "$rc" -eq 10 ] || exit "$rc"
    ;;
  install) install ;;
  status) parts status || [ $? -eq 10 ] ;;
  *) echo "usage: $0 stage PART_FOLDER | install | status" >&2; exit 2 ;;
esac
