#!/usr/bin/env bash
# Sets up the two peer Performer (FAVOR+) implementations that scripts/peers/peer_outputs.py
# runs to make reference fixtures: lucidrains' performer-pytorch 1.1.4 (PyPI) and Google's JAX
# fast_attention.py (google-research; not on PyPI, so it is not downloaded here).
#
#   scripts/peers/setup.sh             # prints the venv's python
#   FAVOR_PEERS_DIR=/some/dir scripts/peers/setup.sh
#
# Creates a venv at $FAVOR_PEERS_DIR/venv (default ~/.cache/favor/peers/venv) with torch (CPU
# wheel index first, plain PyPI torch as a fallback), performer-pytorch==1.1.4, jax[cpu],
# numpy, absl-py + gin-config (imported by fast_attention.py) and safetensors (make_state.py). A second run with all of it
# importable installs nothing. Needs python3 (3.11 tested: performer-pytorch 1.1.4 imports
# distutils, which Python 3.12 dropped) with pip and PyPI reachable.
set -euo pipefail

dir="${FAVOR_PEERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/favor/peers}"
venv="$dir/venv"
py="$venv/bin/python"
jax_file="$dir/fast_attention.py"
# SHA-256 of the fast_attention.py the fixtures were made with (google-research commit
# 0c1bbe5fc971a1de1a427debc814e66ab4f1e7fa). A different file is used, with a warning.
jax_sha256="f3acf4a077a3f95d6c10203d306b798e2d3ec9dd450e635637ddf52b14d70abd"

mkdir -p "$dir"

ready() {
  [[ -x "$py" ]] && "$py" - <<'EOF' >/dev/null 2>&1
import importlib.metadata as md
import torch, performer_pytorch, jax, numpy, absl, gin, safetensors  # noqa: F401
assert md.version("performer-pytorch") == "1.1.4"
EOF
}

if ready; then
  echo "peers venv already complete: $venv" >&2
else
  [[ -x "$py" ]] || python3 -m venv "$venv"
  "$py" -m pip install --quiet --upgrade pip
  if ! "$py" -c 'import torch' >/dev/null 2>&1; then
    echo "installing torch (CPU wheel index)..." >&2
    if ! "$py" -m pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu; then
      echo "CPU wheel index unreachable; installing torch from PyPI (large: CUDA wheels)..." >&2
      "$py" -m pip install --quiet torch
    fi
  fi
  echo "installing performer-pytorch, jax[cpu], numpy, absl-py, gin-config..." >&2
  "$py" -m pip install --quiet numpy "performer-pytorch==1.1.4" "jax[cpu]" absl-py gin-config safetensors
  ready || { echo "error: the venv at $venv is still incomplete" >&2; exit 1; }
fi

"$py" - >&2 <<'EOF'
import importlib.metadata as md
for p in ("torch", "performer-pytorch", "jax", "jaxlib", "numpy", "einops", "absl-py", "gin-config"):
    print(f"  {p}=={md.version(p)}")
EOF

if [[ ! -f "$jax_file" ]]; then
  cat >&2 <<EOF
missing: $jax_file
  Google's JAX Performer is not on PyPI. Save the file
    performer/fast_attention/jax/fast_attention.py
  from the GitHub repository google-research/google-research (Apache-2.0) at
    $jax_file
  (it is third-party code: keep it out of this repository), then run this script again.
EOF
  exit 2
fi
sum="$("$py" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$jax_file")"
if [[ "$sum" != "$jax_sha256" ]]; then
  echo "warning: $jax_file has SHA-256 $sum, not the $jax_sha256 the fixtures were made with" >&2
fi

echo "$py"
