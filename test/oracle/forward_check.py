#!/usr/bin/env python3
"""Outside oracle for lmpack's Llama-family forward (model/llama-forward.ts, kernels/forward):
small random decoders of each family transformers knows, saved as HF checkpoints, and their
logits on fixed token ids, computed by transformers in float64 on the GPU (its rotary tables
stay float32: transformers computes them so in every dtype).

  python3 forward_check.py <out dir>

For each variant writes <out dir>/<name>/ (config.json + model.safetensors, F32) and
<out dir>/<name>/oracle.safetensors (ids I32 [T], logits F64 [T][vocab]); small enough to live
in test/fixtures/forward-oracle, where test/model/forward-oracle.test.ts reads them. Variants: Llama with
GQA, llama3 rope scaling and an untied head; Llama with linear rope scaling and head_dim ≠
hidden/heads; Mistral (sliding window wider than the sequence); Qwen2 (q/k/v biases, tied
embeddings). 
"""
import os, sys
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

out_dir = sys.argv[1]
TOKENS = 33
common = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5)
variants = {
    "llama3-gqa-untied": (LlamaForCausalLM, LlamaConfig(**common, tie_word_embeddings=False, rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32})),
    "llama-linear-headdim": (LlamaForCausalLM, LlamaConfig(**{**common, "num_key_value_heads": 1}, head_dim=24, tie_word_embeddings=True, rope_theta=10000.0, rope_scaling={"rope_type": "linear", "factor": 2.0})),
    "mistral": (MistralForCausalLM, MistralConfig(**common, sliding_window=4096, tie_word_embeddings=False, rope_theta=1000000.0)),
    "qwen2-bias-tied": (Qwen2ForCausalLM, Qwen2Config(**common, tie_word_embeddings=True, rope_theta=1000000.0, use_sliding_window=False)),
}
torch.manual_seed(0)
for name, (cls, config) in variants.items():
    model = cls(config).to(torch.float32).eval()
    # Random but not tiny: every norm weight and bias away from its init, so a missed term shows.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif pname.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    target = os.path.join(out_dir, name)
    model.save_pretrained(target)
    ids = torch.randint(0, config.vocab_size, (TOKENS,), generator=torch.Generator().manual_seed(1))
    m64 = model.to(torch.float64).cuda()
    with torch.no_grad():
        logits = m64(ids[None, :].cuda()).logits[0].cpu()
    save_file({"ids": ids.to(torch.int32).contiguous(), "logits": logits.contiguous()}, os.path.join(target, "oracle.safetensors"))
    print(f"{name}: {cls.__name__}, {sum(p.numel() for p in model.parameters())} parameters, logits {tuple(logits.shape)}, max |logit| {logits.abs().max().item():.4f}")
