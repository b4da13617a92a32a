#!/usr/bin/env python3
"""Outside oracle for lmpack's safetensors outputs (run where torch + safetensors + transformers exist).

For each output made by make-outputs.sh: Python safetensors must load it; every tensor must equal
the source tensor converted by torch itself (`src.to(dtype)`, round to nearest even), compared
bit for bit; and transformers must load the converted directories and give the same logits as
the source model converted by torch. Exit 1 on any mismatch.
"""
import json, sys, glob, os
import torch
from safetensors import safe_open
from safetensors.torch import load_file

root = sys.argv[1]
DT = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
failures = 0

def load_dir(path):
    if path.endswith(".safetensors"):
        return load_file(path)
    out = {}
    for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        out.update(load_file(f))
    return out

def bits(t):
    return t.contiguous().view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])

def check(name, src_dir, out_path, dtype):
    global failures
    src = load_dir(os.path.join(root, "src", src_dir))
    out = load_dir(os.path.join(root, out_path))
    bad = [k for k in src if k not in out or out[k].dtype != dtype or out[k].shape != src[k].shape
           or not torch.equal(bits(out[k]), bits(src[k].to(dtype)))]
    extra = set(out) - set(src)
    n = sum(v.numel() for v in out.values())
    status = "OK" if not bad and not extra else "FAIL"
    failures += status == "FAIL"
    print(f"{status:4} {name:34} {len(out):3} tensors {n:>9} params  dtype {str(dtype):15} bit-identical to torch .to(): {len(src) - len(bad)}/{len(src)}")
    if os.path.isdir(os.path.join(root, out_path)):
        idx = os.path.join(root, out_path, "model.safetensors.index.json")
        if os.path.exists(idx):
            wm = json.load(open(idx))["weight_map"]
            for k, f in wm.items():
                with safe_open(os.path.join(root, out_path, f), "pt") as fh:
                    assert k in fh.keys(), (k, f)
            print(f"     index.json maps all {len(wm)} tensors to {len(set(wm.values()))} shards, each present (safe_open)")

check("fixture bf16 -> f32, sharded 2MB", "fixture", "fixture-f32-sharded", torch.float32)
check("fixture -> .lmpack -> safetensors", "fixture", "fixture-lmpack-roundtrip", torch.bfloat16)
check("fixture bf16 -> f16 (one file)", "fixture", "fixture-f16.safetensors", torch.float16)
check("tinystories f32 -> bf16", "tinystories", "tinystories-bf16", torch.bfloat16)
check("tinystories f32 -> f16", "tinystories", "tinystories-f16", torch.float16)

try:
    from transformers import AutoModelForCausalLM
    ids = torch.tensor([[0, 17, 99, 512, 1024, 7, 3, 250, 4000, 12]])
    for src_dir, out_dir, dtype in [("fixture", "fixture-f32-sharded", torch.float32), ("tinystories", "tinystories-bf16", torch.bfloat16)]:
        ref = AutoModelForCausalLM.from_pretrained(os.path.join(root, "src", src_dir), dtype=dtype).eval()
        got = AutoModelForCausalLM.from_pretrained(os.path.join(root, out_dir)).eval()
        assert got.dtype == dtype, (got.dtype, dtype)
        with torch.no_grad():
            a = ref(ids[:, :8] if src_dir == "tinystories" else ids).logits
            b = got(ids[:, :8] if src_dir == "tinystories" else ids).logits
        same = torch.equal(a, b)
        failures += not same
        print(f"{'OK' if same else 'FAIL':4} transformers loads {out_dir:22} (dtype {got.dtype}): logits identical to source.to({dtype}) -> {same}")
except ImportError as e:
    print("transformers not available:", e)

print("all checks passed" if failures == 0 else f"{failures} check(s) FAILED")
sys.exit(1 if failures else 0)
