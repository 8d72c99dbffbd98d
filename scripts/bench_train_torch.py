"""PyTorch-eager twin of `benches/train.rs`: the same Llama-style model (tied byte embeddings,
pre-norm RMSNorm, RoPE half-split attention, SwiGLU d_ff = 8/3·d), AdamW (β 0.9/0.95, wd 0.1,
decoupled), global-norm clip 1.0, batches of random blocks of the byte-tokenized license texts in
/usr/share/common-licenses. Prints tokens/s over the timed steps (3 warmup steps excluded). `--compile` runs the model through
torch.compile (compiled during the warm-up steps).

    python3 scripts/bench_train_torch.py --d-model 128 --layers 4 --heads 4 --block 128 --batch 8 --steps 30
`--kv-heads`, `--d-ff`, `--vocab` (0: heads, 8/3·d, 256) give other shapes; `--sem-dim S --geo-dim G
--v-dim V` make every attention DBA (caramba's `mode: decoupled`: semantic q·k without RoPE plus
geometric q·k with RoPE, each segment scaled by 1/sqrt(its per-head width), values of V/heads per head); `--device cuda --dtype bf16`
trains on a GPU (pure bf16 parameters and AdamW, as caramba's `--dtype bf16`), timed after a
synchronize, and prints the model FLOPs utilisation against `--peak-tflops` (H100 SXM bf16 dense: 989).
Run it beside `cargo bench --bench train` on the same machine with the same thread count
(`OMP_NUM_THREADS`/`torch.set_num_threads` and `RAYON_NUM_THREADS`, under one `taskset`).
"""
import argparse, glob, math, time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.w


def rope(x, cos, sin):
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


class Block(nn.Module):
    def __init__(self, d, h, kv, f, dba=None):
        super().__init__()
        self.h, self.kv, self.hd = h, kv, d // h
        self.n1, self.n2 = RMSNorm(d), RMSNorm(d)
        self.dba = dba
        if dba is None:
            self.q, self.o = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
            self.k, self.v = nn.Linear(d, kv * self.hd, bias=False), nn.Linear(d, kv * self.hd, bias=False)
        else:
            sem, geo, vd = dba
            self.sh, self.gh, self.vh = sem // h, geo // h, vd // h
            self.q_sem, self.q_geo = nn.Linear(d, sem, bias=False), nn.Linear(d, geo, bias=False)
            self.k_sem, self.k_geo = nn.Linear(d, kv * self.sh, bias=False), nn.Linear(d, kv * self.gh, bias=False)
            self.v, self.o = nn.Linear(d, kv * self.vh, bias=False), nn.Linear(vd, d, bias=False)
        self.gate, self.up, self.down = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False), nn.Linear(f, d, bias=False)

    def attend(self, y, cos, sin):
        b, t, _ = y.shape
        heads = lambda m, n, w: m(y).view(b, t, n, w).transpose(1, 2)
        if self.dba is None:
            q, k, v = heads(self.q, self.h, self.hd), heads(self.k, self.kv, self.hd), heads(self.v, self.kv, self.hd)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.kv != self.h)
        else:
            # One SDPA over the concatenated segments, each query segment pre-scaled by its own
            # 1/sqrt(width) (scale=1): the same scores as caramba's DBA.
            qs, qg = heads(self.q_sem, self.h, self.sh), heads(self.q_geo, self.h, self.gh)
            ks, kg = heads(self.k_sem, self.kv, self.sh), heads(self.k_geo, self.kv, self.gh)
            c, s = cos[:, : self.gh // 2], sin[:, : self.gh // 2]
            q = torch.cat([qs * self.sh ** -0.5, rope(qg, c, s) * self.gh ** -0.5], -1)
            k = torch.cat([ks, rope(kg, c, s)], -1)
            v = heads(self.v, self.kv, self.vh)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0, enable_gqa=self.kv != self.h)
        return self.o(a.transpose(1, 2).reshape(b, t, -1))

    def forward(self, x, cos, sin):
        x = x + self.attend(self.n1(x), cos, sin)
        y = self.n2(x)
        return x + self.down(F.silu(self.gate(y)) * self.up(y))


class Model(nn.Module):
    def __init__(self, d, layers, h, block, kv, f, vocab, dba=None):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        # why: caramba's init (N(0, 0.02) embeddings); PyTorch's N(0, 1) default makes the tied
        # head's logits huge and the loss start near 28 instead of ln(vocab).
        nn.init.normal_(self.emb.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(d, h, kv, f, dba) for _ in range(layers))
        self.norm = RMSNorm(d)
        # why: a DBA block rotates its geometric segment with the first geo/heads/2 frequencies of
        # its own width (caramba's inv_freq over the RoPE'd head width).
        hd = d // h if dba is None else dba[1] // h
        inv = 10000.0 ** (-torch.arange(0, hd // 2) * 2 / hd)
        ang = torch.arange(block)[:, None] * inv[None]
        self.register_buffer("cos", ang.cos())
        self.register_buffer("sin", ang.sin())

    def forward(self, ids):
        x = self.emb(ids)
        for blk in self.blocks:
            x = blk(x, self.cos, self.sin)
        return self.norm(x) @ self.emb.weight.T


def main():
    p = argparse.ArgumentParser()
    for k, v in [("d-model", 128), ("layers", 4), ("heads", 4), ("block", 128), ("batch", 8), ("steps", 30), ("threads", 2),
                 ("kv-heads", 0), ("d-ff", 0), ("vocab", 256), ("sem-dim", 0), ("geo-dim", 0), ("v-dim", 0)]:
        p.add_argument(f"--{k}", type=int, default=v)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--compile", action="store_true", help="torch.compile the model (its compile time is in the warm-up steps)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    kv = a.kv_heads or a.heads
    f = a.d_ff or a.d_model * 8 // 3
    dev = torch.device(a.device)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    text = b"".join(open(f, "rb").read() for f in sorted(glob.glob("/usr/share/common-licenses/*")) if not f.endswith(".gz"))
    data = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
    dba = (a.sem_dim, a.geo_dim, a.v_dim or a.d_model) if a.sem_dim or a.geo_dim else None
    model = Model(a.d_model, a.layers, a.heads, a.block, kv, f, a.vocab, dba).to(device=dev, dtype=dtype)
    data = data.to(dev)
    fwd = torch.compile(model) if a.compile else model
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}], lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    warm, t0, tokens = 3, None, 0
    for step in range(a.steps):
        if step == warm:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        ix = torch.randint(0, len(data) - a.block - 1, (a.batch,), device=dev)
        x = torch.stack([data[i : i + a.block] for i in ix])
        y = torch.stack([data[i + 1 : i + a.block + 1] for i in ix])
        loss = F.cross_entropy(fwd(x).view(-1, a.vocab).float(), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step >= warm:
            tokens += a.batch * a.block
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    # 6 FLOPs per parameter per token (forward + backward; the tied head counts once as a matmul),
    # plus causal attention's score and value matmuls: 6 · layers · block · (q·k + v width) / 2 per
    # token (= 6 · layers · block · d for standard attention).
    width = a.d_model if dba is None else (dba[0] + dba[1] + dba[2]) // 2
    flops_per_token = 6 * n_params + 6 * a.layers * a.block * width
    mfu = tokens / dt * flops_per_token / (a.peak_tflops * 1e12)
    print(f"torch {'compile' if a.compile else 'eager'} ({a.device} {a.dtype}, {a.threads} threads) d_model={a.d_model} layers={a.layers} heads={a.heads}/{kv}{f' dba={dba[0]}/{dba[1]}/{dba[2]}' if dba else ''} d_ff={f} vocab={a.vocab} block={a.block} batch={a.batch}: "
          f"{tokens / dt:.0f} tokens/s over {a.steps - warm} steps ({dt:.2f} s), final loss {loss.item():.3f}, "
          f"{n_params / 1e6:.1f}M params, MFU {100 * mfu:.1f}% of {a.peak_tflops:.0f} TFLOP/s, torch {torch.__version__}")


if __name__ == "__main__":
    main()
