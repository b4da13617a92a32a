#!/usr/bin/env bash
# Produces lmpack outputs for the Python oracle (test/oracle/safetensors_check.py), which runs
# where Python safetensors/torch/transformers are installed (the GPU machine). Usage:
#   bash test/oracle/make-outputs.sh <dir>      (after npm run build)
set -euo pipefail
out=${1:?output dir}
root=$(cd "$(dirname "$0")/../.." && pwd)
shared=${LMPACK_SHARED:-$root/../shared}
lmpack() { node "$root/dist/cli/main.js" "$@" --force --no-progress; }
rm -rf "$out" && mkdir -p "$out/src"
cp -r "$root/test/fixtures/lmpack-fixture-2m" "$out/src/fixture"
cp -r "$shared/models/tinystories-656K" "$out/src/tinystories"
chmod -R u+w "$out/src"

lmpack convert "$out/src/fixture" --to safetensors --dtype f32 --max-shard-size 2MB --out "$out/fixture-f32-sharded"
lmpack convert "$out/src/fixture" --to lmpack --out "$out/fixture.lmpack"
lmpack convert "$out/fixture.lmpack" --to safetensors --out "$out/fixture-lmpack-roundtrip"
lmpack convert "$out/src/fixture" --to safetensors --dtype f16 --out "$out/fixture-f16.safetensors"
lmpack convert "$out/src/tinystories" --to safetensors --dtype bf16 --out "$out/tinystories-bf16"
lmpack convert "$out/src/tinystories" --to safetensors --dtype f16 --out "$out/tinystories-f16"
rm "$out/fixture.lmpack"
ls -R "$out" | head -40
