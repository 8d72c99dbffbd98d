"""HF transformers' side of `cargo bench --bench decode` on the CPU: SmolLM2-135M-Instruct from the
same GGUF file (dequantized to f32 by transformers), a 512-token prefill and 128 greedy new tokens
after an 8-token prompt, best of 3, as the Rust bench does.

    python3 scripts/bench_decode_cpu_hf.py --gguf ~/.cache/caramba/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf --threads 2

Needs `pip install torch transformers gguf`. Prints one JSON line.
"""
import argparse, json, os, time

import torch
from transformers import AutoModelForCausalLM


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gguf", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    path = os.path.expanduser(a.gguf)
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), torch_dtype=torch.float32
    ).eval()
    vocab = model.config.vocab_size
    # The Rust bench's pseudo-random prompt (throughput does not depend on the ids).
    ids = torch.tensor([[((i * 2654435761) % 2**32 >> 7) % (vocab - 100) + 100 for i in range(512)]])
    best_prefill = best_decode = 0.0
    with torch.inference_mode():
        for _ in range(a.rounds):
            t0 = time.perf_counter()
            model(ids)
            best_prefill = max(best_prefill, 512 / (time.perf_counter() - t0))
            prompt = ids[:, :8]
            t0 = time.perf_counter()
            model.generate(prompt, max_new_tokens=1, min_new_tokens=1, do_sample=False)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            model.generate(prompt, max_new_tokens=128, min_new_tokens=128, do_sample=False)
            best_decode = max(best_decode, 127 / (time.perf_counter() - t0 - first))
    print(json.dumps({"impl": "transformers", "version": __import__("transformers").__version__,
                      "threads": a.threads, "prefill_512_tokens_per_sec": best_prefill,
                      "decode_tokens_per_sec": best_decode}))


if __name__ == "__main__":
    main()
