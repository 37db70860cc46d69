#!/usr/bin/env bash
# Fetch llama.cpp's HF -> GGUF converter (convert_hf_to_gguf.py, its conversion/ package and gguf-py)
# from the PyPI sdist of llama-cpp-python, which vendors llama.cpp, so that the slow test
# tests/checkpoint/test_gguf.py can check that llama.cpp accepts herd's Hugging Face export.
#
#   scripts/fetch_llama_cpp.sh [DEST]        # then: make test-slow ARGS=tests/checkpoint/test_gguf.py
#
# DEST defaults to $HERD_LLAMA_CPP_SRC, else ~/.cache/herd/llama.cpp (where the test looks). Only the
# converter's Python files are unpacked (about 2 MB, not the C++ sources); the one package the
# converter needs beyond herd[ref] (sentencepiece) is installed into DEST/pydeps, not into your
# environment. LLAMA_CPP_PYTHON_VERSION picks the sdist (default: 0.3.36, the version tested; "latest"
# for the newest). PYTHON picks the interpreter (default: the repo's .venv, else python3).
# Nothing of this is committed: the sources stay in DEST.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-${HERD_LLAMA_CPP_SRC:-${XDG_CACHE_HOME:-$HOME/.cache}/herd/llama.cpp}}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
spec="llama-cpp-python"
[ "$VERSION" = latest ] || spec="llama-cpp-python==$VERSION"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch_llama_cpp: downloading the $spec sdist"
"$PYTHON" -m pip --disable-pip-version-check -q download --no-deps --no-binary :all: "$spec" -d "$tmp"
sdist=$(ls "$tmp"/llama_cpp_python-*.tar.gz)

rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
"$PYTHON" - "$sdist" "$DEST.tmp" <<'EOF'
import sys, tarfile
from pathlib import PurePosixPath

sdist, dest = sys.argv[1], sys.argv[2]
keep = ("convert_hf_to_gguf.py", "conversion", "gguf-py", "requirements", "LICENSE")
with tarfile.open(sdist) as tar:
    members = []
    for m in tar.getmembers():
        parts = PurePosixPath(m.name).parts
        # llama_cpp_python-X/vendor/llama.cpp/<keep>...
        if len(parts) > 3 and parts[1:3] == ("vendor", "llama.cpp") and parts[3] in keep and (m.isfile() or m.isdir()):
            m.name = str(PurePosixPath(*parts[3:]))
            members.append(m)
    if not any(m.name == "convert_hf_to_gguf.py" for m in members):
        sys.exit(f"fetch_llama_cpp: {sdist} has no vendor/llama.cpp/convert_hf_to_gguf.py")
    kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    tar.extractall(dest, members=members, **kw)
print(f"fetch_llama_cpp: unpacked {len(members)} files and folders of {sdist.rsplit('/', 1)[-1]}")
EOF
echo "fetch_llama_cpp: installing sentencepiece into $DEST/pydeps"
"$PYTHON" -m pip --disable-pip-version-check -q install --target "$DEST.tmp/pydeps" "sentencepiece>=0.1.98,<0.3"
basename "$sdist" .tar.gz > "$DEST.tmp/SOURCE"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "fetch_llama_cpp: $DEST ready; the slow test finds it there (or set HERD_LLAMA_CPP_SRC=$DEST)"
