"""HF transformers' side of `cargo bench --features cuda --bench gpu -- decode`: batch-1 greedy decode
tokens/s of LlamaForCausalLM built from the same config.json with random bf16 weights, after the
same 128-token prompt, 128 new tokens (eos never stops it: min_new_tokens = max_new_tokens).

    python3 scripts/bench_decode_hf.py --config presets/configs/llama-3.2-1b.json [--compile]

Eager is what `model.generate` does by default. `--compile` adds the static cache with
torch.compile(mode="reduce-overhead"), which captures the decode step in a CUDA graph.
"""
import argparse, json, statistics, time

import torch
import transformers
from transformers import AutoConfig, LlamaForCausalLM


def tokens_per_s(model, ids, n, **kw):
    model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False, **kw)  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    model.generate(ids, max_new_tokens=1, min_new_tokens=1, do_sample=False, **kw)
    torch.cuda.synchronize()
    prefill = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, **kw)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0 - prefill
    assert out.shape[1] == ids.shape[1] + n
    return (n - 1) / dt


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compile", action="store_true")
    a = p.parse_args()
    torch.manual_seed(0)
    cfg = AutoConfig.from_pretrained(a.config)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    ids = torch.tensor([[(i * 7919 + 13) % cfg.vocab_size for i in range(a.prompt)]], device="cuda")
    modes = [("eager", {})] + ([("static+compile", {"cache_implementation": "static"})] if a.compile else [])
    for name, kw in modes:
        if name != "eager":
            model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
        rates = [tokens_per_s(model, ids, a.new, **kw) for _ in range(a.rounds)]
        print(json.dumps({"bench": "decode_hf", "mode": name, "prompt": a.prompt, "gen": a.new,
                          "tokens_per_s": statistics.median(rates), "all": rates,
                          "transformers": transformers.__version__, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
