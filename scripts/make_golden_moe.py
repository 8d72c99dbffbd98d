#!/usr/bin/env python3
"""Generate tests/golden/tiny_moe.safetensors: HF transformers' Mixtral sparse-MoE block on random
weights (d_model 16, d_ff 24, 4 experts, top-2, 5 tokens), its input, output and routing, and its
load-balancing loss.

Run once (CI never runs Python):  pip install torch transformers safetensors
                                  python3 scripts/make_golden_moe.py
The Rust test tests/moe_golden.rs builds caramba's MoELayer from the weights (HF Mixtral's
checkpoint names `gate.weight`, `experts.{i}.w1/w2/w3.weight`) and compares outputs (f32).

Weights are N(0, 0.5²), the router included, so routing is non-trivial. transformers 5 stores the
experts fused (`experts.gate_up_proj` (E, 2·d_ff, d) with gate rows first, `experts.down_proj`
(E, d, d_ff)); older versions have one module per expert (`experts.{i}.w1/w2/w3`). Both are saved
under the per-expert checkpoint names.
"""
import os

import torch
import transformers
from safetensors.torch import save_file
from transformers import MixtralConfig
from transformers.models.mixtral import modeling_mixtral as mm

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "tiny_moe.safetensors")
SEED = 1234
D, FF, E, K, N = 16, 24, 4, 2, 5


def main() -> None:
    torch.manual_seed(SEED)
    cfg = MixtralConfig(
        hidden_size=D,
        intermediate_size=FF,
        num_local_experts=E,
        num_experts_per_tok=K,
        router_jitter_noise=0.0,
        hidden_act="silu",
    )
    block = mm.MixtralSparseMoeBlock(cfg).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    xs = torch.randn(1, N, D)
    with torch.no_grad():
        ys = block(xs)
        if isinstance(ys, tuple):  # transformers 4 returns (hidden, router_logits)
            ys = ys[0]
        logits = torch.nn.functional.linear(xs.view(N, D), block.gate.weight)
        aux = mm.load_balancing_loss_func((logits,), E, K)

    tensors = {"gate.weight": block.gate.weight.detach().clone()}
    if hasattr(block.experts, "gate_up_proj"):
        gate_up, down = block.experts.gate_up_proj.detach(), block.experts.down_proj.detach()
        for i in range(E):
            tensors[f"experts.{i}.w1.weight"] = gate_up[i, :FF].clone()
            tensors[f"experts.{i}.w3.weight"] = gate_up[i, FF:].clone()
            tensors[f"experts.{i}.w2.weight"] = down[i].clone()
    else:
        for i in range(E):
            for w in ("w1", "w2", "w3"):
                tensors[f"experts.{i}.{w}.weight"] = getattr(block.experts[i], w).weight.detach().clone()
    probs = torch.softmax(logits.float(), dim=-1)
    tensors["input"] = xs.contiguous()
    tensors["output"] = ys.contiguous()
    tensors["chosen"] = torch.topk(probs, K, dim=-1).indices.to(torch.int64).contiguous()
    tensors["hf_load_balancing_loss"] = aux.reshape(1).float()
    save_file(tensors, OUT, metadata={"transformers": transformers.__version__, "torch": torch.__version__})
    print(f"wrote {OUT}: output[0,0,:4] = {ys[0, 0, :4].tolist()}, hf aux = {aux.item():.6f}")


if __name__ == "__main__":
    main()
