#!/usr/bin/env python3
"""Outside oracle for `lmpack calibrate`: the same calibration windows through transformers'
LlamaForCausalLM in fp32 (TF32 off), H = XᵀX of every linear input taken by forward hooks on
q_proj, o_proj, gate_proj and down_proj, accumulated in float64 on the GPU.

  python3 hessian_check.py <model dir> <ids.bin> <seq_len> <out dir>

ids.bin: little-endian int32, the windows back to back (test/oracle/calibration-ids.mjs writes
it with lmpack's own window choice). Writes <out dir>/torch-hessians-<k>.safetensors (F32, named
like lmpack's store, split so that no file exceeds 16 MiB) and prints one line per entry.
bench/hessian-compare.ts compares them with lmpack's store.
"""
import os, sys, time
import numpy as np
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

model_dir, ids_file, seq_len, out_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
ids = torch.from_numpy(np.fromfile(ids_file, dtype="<i4").reshape(-1, seq_len).astype(np.int64)).cuda()
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).cuda().eval()
H, N = {}, {}

def hook(name):
    def f(module, args):
        x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
        H[name] = H.get(name, 0) + x.T @ x
        N[name] = N.get(name, 0) + x.shape[0]
    return f

for name, module in model.named_modules():
    if name.endswith(("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj")):
        module.register_forward_pre_hook(hook(name))
start = time.time()
with torch.no_grad():
    for row in ids:
        model.model(row[None, :])
torch.cuda.synchronize()
print(f"{ids.shape[0]} windows of {seq_len} tokens, {time.time() - start:.2f} s, torch {torch.__version__}")
os.makedirs(out_dir, exist_ok=True)
part, size, k = {}, 0, 0
for name in H:
    t = H[name].float().cpu().contiguous()
    print(f"{name}: [{t.shape[0]}, {t.shape[1]}] tokens {N[name]} trace {H[name].trace().item():.9e}")
    if size + t.numel() * 4 > 15 * 2**20 and part:
        save_file(part, f"{out_dir}/torch-hessians-{k}.safetensors"); part, size, k = {}, 0, k + 1
    part[name] = t
    size += t.numel() * 4
save_file(part, f"{out_dir}/torch-hessians-{k}.safetensors")
