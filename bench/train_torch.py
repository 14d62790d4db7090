"""
PyTorch reference for bench/train.ts: the same Llama decoder (RMSNorm, RoPE,
SwiGLU, grouped-query attention, tied embedding), the same initial weights,
the same batches, cross-entropy with ignore_index=-100, global-norm clipping,
and torch.optim.AdamW with the same warmup + cosine schedule. CPU only.
Benchmark-only: PyTorch is never part of the product or its tests.

  /usr/bin/python3 bench/train_torch.py <dir written by bench/train.ts>
"""
import json
import math
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "F32"
        a, b = e["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(body[a:b], dtype=np.float32).copy().reshape(e["shape"]))
    return out


def main(d):
    spec = json.load(open(f"{d}/spec.json"))
    c, h = spec["config"], spec["hyper"]
    torch.set_num_threads(spec["threads"])
    W = {k: torch.nn.Parameter(v) for k, v in read_safetensors(f"{d}/init.safetensors").items()}
    steps, B, T = spec["steps"], h["batchSize"], h["seqLen"]
    ids = torch.from_numpy(np.fromfile(f"{d}/inputs.bin", dtype=np.int64).reshape(steps, B, T))
    tgt = torch.from_numpy(np.fromfile(f"{d}/targets.bin", dtype=np.int64).reshape(steps, B, T))
    H, KV, C = c["numHeads"], c["numKvHeads"], c["hiddenSize"]
    D = C // H
    inv = 1.0 / (c["ropeTheta"] ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
    freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv)
    cos = torch.cat([freqs.cos(), freqs.cos()], -1)
    sin = torch.cat([freqs.sin(), freqs.sin()], -1)
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # True above the diagonal: masked

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c["rmsNormEps"]) * w

    def rope(x):
        x1, x2 = x[..., : D // 2], x[..., D // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def forward(x_ids):
        x = W["model.embed_tokens.weight"][x_ids]
        for i in range(c["numLayers"]):
            p = f"model.layers.{i}"
            h_ = rms(x, W[f"{p}.input_layernorm.weight"])
            q = (h_ @ W[f"{p}.self_attn.q_proj.weight"].T).view(B, T, H, D).transpose(1, 2)
            k = (h_ @ W[f"{p}.self_attn.k_proj.weight"].T).view(B, T, KV, D).transpose(1, 2)
            v = (h_ @ W[f"{p}.self_attn.v_proj.weight"].T).view(B, T, KV, D).transpose(1, 2)
            q, k = rope(q), rope(k)
            k = k.repeat_interleave(H // KV, dim=1)
            v = v.repeat_interleave(H // KV, dim=1)
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
            y = torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1) @ v
            x = x + y.transpose(1, 2).reshape(B, T, C) @ W[f"{p}.self_attn.o_proj.weight"].T
            h_ = rms(x, W[f"{p}.post_attention_layernorm.weight"])
            g = h_ @ W[f"{p}.mlp.gate_proj.weight"].T
            u = h_ @ W[f"{p}.mlp.up_proj.weight"].T
            x = x + (F.silu(g) * u) @ W[f"{p}.mlp.down_proj.weight"].T
        x = rms(x, W["model.norm.weight"])
        return x @ W["model.embed_tokens.weight"].T

    o = spec["optimizer"]
    decay = [p for p in W.values() if p.dim() >= 2]
    no_decay = [p for p in W.values() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": o["weightDecay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=o["lr"], betas=(0.9, 0.95), eps=1e-8,
    )

    def lr_at(t):
        warm, total, lr, min_lr = o["warmupSteps"], o["totalSteps"], o["lr"], o["minLr"]
        if t <= warm:
            return lr * t / max(1, warm)
        prog = min(max((t - warm) / max(1, total - warm), 0.0), 1.0)
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * prog))

    losses, times = [], []
    for s in range(steps):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(s + 1)
        logits = forward(ids[s])
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), tgt[s].view(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(W.values()), o["clipNorm"])
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    print(json.dumps({"losses": losses, "step_seconds": times, "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main(sys.argv[1])
