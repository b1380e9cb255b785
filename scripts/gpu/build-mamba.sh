#!/usr/bin/env bash
# Build causal-conv1d and mamba-ssm from their sdists (in .sdist/) for Hopper only (sm_90): their
# setup.py compiles for nine architectures under CUDA 13, which takes far longer. Needs torch and
# nvcc; installs with --no-build-isolation --no-deps into the current Python.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${BUILD_DIR:-/tmp/lc-build}
mkdir -p "$work"
for sdist in .sdist/causal_conv1d-*.tar.gz .sdist/mamba_ssm-*.tar.gz; do
  tar xzf "$sdist" -C "$work"
done
python3 - "$work" <<'PY'
import pathlib, re, sys
for setup in pathlib.Path(sys.argv[1]).glob("*/setup.py"):
    text = setup.read_text()
    # turn every -gencode pair except sm_90 into `pass` (keeps the if-blocks valid)
    text = re.sub(r'cc_flag\.append\("-gencode"\)\n(\s*)cc_flag\.append\("arch=compute_(?!90)\d+,code=sm_\d+"\)',
                  r"pass\n\1pass", text)
    compile(text, str(setup), "exec")
    setup.write_text(text)
    print(setup, "gencodes left:", re.findall(r"arch=compute_\d+", text))
PY
export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=${MAX_JOBS:-16} CAUSAL_CONV1D_FORCE_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE
python3 -m pip install --no-build-isolation --no-deps --no-index "$work"/causal_conv1d-*/
python3 -m pip install --no-build-isolation --no-deps --no-index "$work"/mamba_ssm-*/
python3 -c "import causal_conv1d, mamba_ssm, selective_scan_cuda; print('mamba-ssm', mamba_ssm.__version__, 'built')"
