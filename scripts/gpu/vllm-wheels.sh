#!/usr/bin/env bash
# Issue 15: vLLM 0.26.0 for the H200 device, which has no network and takes at most 64 MiB a call.
# Runs here, where pip reaches the package index:
#   1. downloads the pinned wheels of $VLLM_REQ_DIR/requirements.txt (vLLM and the packages the device
#      image lacks, README.md there) for CPython 3.12 on manylinux x86-64, without resolving
#      dependencies (the list is already the whole closure), into .vllm-dl/;
#   2. packs them into .vllm-parts/part-01 ... part-NN, each holding at most VLLM_PART_MIB MiB of wheels
#      (60: the working tree, under 1 MiB, travels with each part). A wheel larger than that is cut into
#      pieces (WHEEL.000, WHEEL.001 ...; `cat` joins them) that go to different parts. Every part holds
#      the same manifest.json: each wheel's file name, size and sha256, and the pieces that make it
#      (file, part, size, sha256);
#   3. prints the device calls, one part each; scripts/gpu/vllm-install.sh stages and installs there.
#        bash scripts/gpu/vllm-wheels.sh
# Re-running downloads nothing that is already there: pip keeps a file of the download folder whose
# sha256 matches the index's and fetches it again otherwise. The parts are packed afresh each time.
# Variables: VLLM_REQ_DIR (../shared/wheels/vllm-h200, beside the checkout: requirements.txt and
# platforms.txt), VLLM_DL (.vllm-dl), VLLM_PARTS (.vllm-parts), VLLM_PART_MIB (60) or VLLM_PART_BYTES,
# VLLM_SKIP_DOWNLOAD=1 (pack what VLLM_DL holds, no network), VLLM_EXTRA_PLATFORMS (more --platform
# flags, e.g. "--platform manylinux_2_39_x86_64", for a wheel that platforms.txt misses).
set -euo pipefail
cd "$(dirname "$0")/../.."
REQ_DIR=${VLLM_REQ_DIR:-../shared/wheels/vllm-h200}
DL=${VLLM_DL:-.vllm-dl}
PARTS=${VLLM_PARTS:-.vllm-parts}
PART_BYTES=${VLLM_PART_BYTES:-$((${VLLM_PART_MIB:-60} * 1024 * 1024))}
PY=${PY:-python3}
[ -f "$REQ_DIR/requirements.txt" ] || { echo "no $REQ_DIR/requirements.txt (set VLLM_REQ_DIR)" >&2; exit 1; }
mkdir -p "$DL" "$PARTS"

if [ "${VLLM_SKIP_DOWNLOAD:-0}" != 1 ]; then
  platforms=() extra=()
  read -r -d '' -a platforms < "$REQ_DIR/platforms.txt" || true
  read -r -a extra <<< "${VLLM_EXTRA_PLATFORMS:-}" || true
  log=$DL/pip-download.log
  { $PY -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${platforms[@]}" "${extra[@]}" --progress-bar off -d "$DL" -r "$REQ_DIR/requirements.txt" 2>&1 \
      || echo "pip download exited $?"; } \
    | tee "$log" | { grep -E '^(ERROR|Saved)|bad hash|exited' || true; } | sed -E 's/^Saved .*\//saved /'
  if grep -q '^pip download exited' "$log"; then echo "pip download failed: see $log" >&2; exit 1; fi
  count() { grep -c "$1" "$log" || true; }
  kept=$(($(count 'File was already downloaded') - $(count 'has bad hash')))
  echo "download: $(count '^Saved') fetched, $kept already there with the index's sha256"
fi

$PY - "$REQ_DIR/requirements.txt" "$DL" "$PARTS" "$PART_BYTES" <<'PY'
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

req_file, dl, parts_dir = (Path(a) for a in sys.argv[1:4])
part_bytes = int(sys.argv[4])
MIB = 1024 * 1024
try:
    from packaging.version import InvalidVersion, Version
except ImportError:  # pip carries its own copy
    from pip._vendor.packaging.version import InvalidVersion, Version


def name_key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def version_key(version: str) -> str:
    try:
        return str(Version(version))
    except InvalidVersion:
        return version.lower()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(MIB):
            digest.update(block)
    return digest.hexdigest()


wanted, problems = [], []
for line in req_file.read_text().splitlines():
    line = line.split("#", 1)[0].split(";", 1)[0].strip()
    if not line or line.startswith("-"):
        continue
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*(\S+)", line)
    if not m:
        problems.append(f"not pinned with ==: {line}")
        continue
    wanted.append((m.group(1), m.group(3)))

on_disk: dict[tuple[str, str], list[Path]] = {}
for whl in dl.glob("*.whl"):
    fields = whl.name.split("-")
    if len(fields) >= 5:
        on_disk.setdefault((name_key(fields[0]), version_key(fields[1])), []).append(whl)

wheels = []
for name, version in wanted:
    found = sorted(on_disk.get((name_key(name), version_key(version)), []), key=lambda p: p.stat().st_mtime)
    if not found:
        problems.append(f"no wheel in {dl} for {name}=={version}")
        continue
    if len(found) > 1:  # two wheels of one version stop the whole install: keep the newest
        print(f"note: {len(found)} wheels for {name}=={version}; packing the newest, {found[-1].name}")
    wheels.append({"file": found[-1].name, "requirement": f"{name}=={version}", "path": found[-1]})
if problems:
    sys.exit("\n".join(problems))

# Items to pack: whole wheels, or the pieces of a wheel larger than a part.
items = []
for w in wheels:
    w["size"] = w["path"].stat().st_size
    w["sha256"] = sha256(w["path"])
    if w["size"] <= part_bytes:
        w["pieces"] = [{"file": w["file"], "size": w["size"], "sha256": w["sha256"]}]
    else:
        n = -(-w["size"] // part_bytes)
        w["pieces"] = [{"file": f"{w['file']}.{i:03d}", "size": min(part_bytes, w["size"] - i * part_bytes),
                        "offset": i * part_bytes} for i in range(n)]
    items += [(w, piece) for piece in w["pieces"]]

# First fit, largest first. The pieces of a wheel cannot share a part: all but its last fill one each.
bins: list[dict] = []
for w, piece in sorted(items, key=lambda it: (-it[1]["size"], it[1]["file"])):
    b = next((b for b in bins if b["free"] >= piece["size"]), None)
    if b is None:
        b = {"free": part_bytes, "items": []}
        bins.append(b)
    b["free"] -= piece["size"]
    b["items"].append((w, piece))
for i, b in enumerate(bins, 1):
    b["name"] = f"part-{i:02d}"
    for _, piece in b["items"]:
        piece["part"] = b["name"]

for old in parts_dir.iterdir():
    if re.fullmatch(r"part-\d+", old.name) and old.is_dir():
        shutil.rmtree(old)
for b in bins:
    out = parts_dir / b["name"]
    out.mkdir()
    for w, piece in b["items"]:
        dest = out / piece["file"]
        if "offset" not in piece:
            shutil.copyfile(w["path"], dest)
            continue
        with w["path"].open("rb") as src, dest.open("wb") as fh:
            src.seek(piece.pop("offset"))
            data = src.read(piece["size"])
            fh.write(data)
        piece["sha256"] = hashlib.sha256(data).hexdigest()

listing = [{"file": w["file"], "requirement": w["requirement"], "size": w["size"], "sha256": w["sha256"],
            "pieces": w["pieces"]} for w in wheels]
manifest = {
    "format": 1,
    # one id per packing: parts of two packings must not be mixed on the device
    "set": hashlib.sha256(json.dumps([listing, part_bytes], sort_keys=True).encode()).hexdigest()[:16],
    "part_bytes": part_bytes,
    "parts": [b["name"] for b in bins],
    "wheels": listing,
}
text = json.dumps(manifest, indent=1) + "\n"
for b in bins:
    (parts_dir / b["name"] / "manifest.json").write_text(text)
(parts_dir / "manifest.json").write_text(text)

total = sum(w["size"] for w in wheels)
split = [w for w in wheels if len(w["pieces"]) > 1]
print(f"{len(wheels)} wheels, {total / MIB:.1f} MiB, in {len(bins)} parts of at most"
      f" {part_bytes / MIB:.1f} MiB (set {manifest['set']}); cut in pieces: "
      + (", ".join(f"{w['file']} ({len(w['pieces'])})" for w in split) or "none"))
for b in bins:
    used = part_bytes - b["free"]
    print(f"  {parts_dir / b['name']}: {used / MIB:6.2f} MiB ({used} bytes), {len(b['items'])} files")
print("Device calls, back to back on one warm machine (a machine goes back 30 s after a call):")
for i, b in enumerate(bins, 1):
    part = parts_dir / b["name"]
    last = "   # the last: joins, checks, installs" if i == len(bins) else ""
    print(f"  {i}. command: bash scripts/gpu/vllm-install.sh stage {part}   carry: [\"{part}\"]{last}")
PY
