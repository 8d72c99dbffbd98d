#!/usr/bin/env python3
"""Generate tests/golden/tiny_llama: a tiny random Llama (GQA, llama3 RoPE scaling, tied
embeddings) saved as an HF directory, and HF transformers' logits and greedy continuations for it.

Run once (CI never runs Python):  pip install torch transformers tokenizers
                                  python3 scripts/make_golden.py
The Rust test tests/loader_golden.rs loads the directory through caramba's HF-directory path and
compares logits (f32, <= 1e-4 relative) and greedy tokens (exactly).

It also writes tiny_llama.q8_0.gguf the way llama.cpp's converter would (q/k rows permuted to
interleaved RoPE, matrices in Q8_0, the BPE tokenizer in the metadata) with the logits of the
same model computed by transformers from the dequantized weights (GGUF llama3 RoPE scaling is a
`rope_freqs` tensor caramba does not read, so this copy has plain RoPE)."""
import json
import os

import gguf
import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "tiny_llama")
SEED = 1234

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Caramba compiles manifests into models and trains them on candle.",
    "Grouped-query attention shares keys and values between heads.",
    "Rotary position embeddings rotate pairs of features by angles that grow with position.",
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "Once upon a time there was a tiny language model that could count: 1 2 3 4 5 6 7 8 9 10.",
] * 20

PROMPTS = [
    "The capital of France is",
    "Once upon a time",
    "Rotary position 123 embeddings",
]


def main() -> None:
    torch.manual_seed(SEED)
    os.makedirs(OUT, exist_ok=True)

    # A byte-level BPE like Llama 3 / SmolLM2 (no prefix space), with <s> and </s> specials.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(os.path.join(OUT, "tokenizer.json"))
    vocab = tok.get_vocab_size()

    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        # why: original_max_position_embeddings 64 puts head_dim-16 frequencies in all three
        # llama3 bands (kept, interpolated, divided by the factor).
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=[2, 0],
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
    )
    model = LlamaForCausalLM(cfg).eval()
    # Larger-than-default weights so the logits are far from uniform and greedy paths are stable.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.15)
            else:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(OUT, safe_serialization=True)

    cases = []
    for prompt in PROMPTS:
        ids = tok.encode(prompt).ids
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x).logits[0].float()
            out = model.generate(
                x, max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=0,
                attention_mask=torch.ones_like(x),
            )
        cases.append({
            "prompt": prompt,
            "ids": ids,
            "logits": [[round(float(v), 7) for v in row] for row in logits],
            "greedy": out[0, len(ids):].tolist(),
        })
    gguf_cases = write_gguf(model, cfg, tok)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"transformers": __import__("transformers").__version__, "torch": torch.__version__,
                   "cases": cases, "gguf_cases": gguf_cases}, f)
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {OUT} ({total} bytes)")


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py: HF half-split RoPE rows -> interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, cfg, tok):
    path = os.path.join(OUT, "tiny_llama.q8_0.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_vocab_size(cfg.vocab_size)
    spec = json.loads(tok.to_str())
    vocab = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t in ("<unk>", "<s>", "</s>") else 1 for t, _ in vocab])
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_chat_template("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
                        "{% if add_generation_prompt %}<s>assistant: {% endif %}")
    names = {
        "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    dequantized = {}
    for name, t in state.items():
        if name == "lm_head.weight":
            continue  # tied
        if name == "model.embed_tokens.weight":
            out = "token_embd.weight"
        elif name == "model.norm.weight":
            out = "output_norm.weight"
        else:
            i = name.split(".")[2]
            inner = ".".join(name.split(".")[3:-1])
            out = f"blk.{i}.{names[inner]}.weight"
        data = t
        if name.endswith("q_proj.weight"):
            data = permute(t, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = permute(t, cfg.num_key_value_heads)
        if data.ndim == 2:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(out, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            deq = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).reshape(t.shape)
            if name.endswith("q_proj.weight") or name.endswith("k_proj.weight"):
                heads = cfg.num_attention_heads if "q_proj" in name else cfg.num_key_value_heads
                # undo the permutation on the dequantized copy for the HF reference
                hd = t.shape[0] // heads
                deq = deq.reshape(heads, hd // 2, 2, -1).swapaxes(1, 2).reshape(t.shape)
            dequantized[name] = deq
        else:
            w.add_tensor(out, data.astype(np.float32))
            dequantized[name] = data
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # The reference: the same architecture with plain RoPE on the dequantized weights.
    plain = LlamaConfig(**{**cfg.to_dict(), "rope_scaling": None, "rope_parameters": None})
    plain.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
    ref = LlamaForCausalLM(plain).eval()
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in dequantized.items()}
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    ref.load_state_dict(sd)
    cases = []
    for prompt in PROMPTS:
        ids = [1] + tok.encode(prompt).ids  # add_bos_token
        with torch.no_grad():
            logits = ref(torch.tensor([ids])).logits[0].float()
        cases.append({"prompt": prompt, "ids": ids,
                      "logits": [[round(float(v), 6) for v in row] for row in logits]})
    return cases


if __name__ == "__main__":
    main()
