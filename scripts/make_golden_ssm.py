#!/usr/bin/env python3
"""Generate tests/golden/tiny_ssm.safetensors: HF transformers' MambaMixer (its torch path, the
"slow" forward without CUDA kernels) on random weights (d_model 16, d_state 8, d_conv 4, expand 2,
dt_rank 3, 2 rows × 11 tokens), its input and output.

Run once (CI never runs Python):  pip install torch transformers safetensors
                                  python3 scripts/make_golden_ssm.py
The Rust test tests/ssm_golden.rs builds caramba's SSMLayer from the weights (HF's checkpoint names
`in_proj.weight`, `conv1d.weight/bias`, `x_proj.weight`, `dt_proj.weight/bias`, `A_log`, `D`,
`out_proj.weight`) and compares the full forward and a token-by-token cached decode (f32).

Every parameter is random, not Mamba's initialisation: A_log ~ N(0, 0.5²) (so A is not the same
for every channel), D ~ N(1, 0.5²), dt_proj.bias ~ N(−1, 0.5²), the rest N(0, 0.3²).
"""
import os

import torch
from safetensors.torch import save_file
from transformers import MambaConfig
from transformers.models.mamba import modeling_mamba as mm

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "tiny_ssm.safetensors")
SEED = 4321
D, N, K, EXPAND, R, B, T = 16, 8, 4, 2, 3, 2, 11


def main() -> None:
    torch.manual_seed(SEED)
    cfg = MambaConfig(
        hidden_size=D,
        state_size=N,
        conv_kernel=K,
        expand=EXPAND,
        time_step_rank=R,
        use_bias=False,
        use_conv_bias=True,
        hidden_act="silu",
        num_hidden_layers=1,
        use_mambapy=False,
    )
    mixer = mm.MambaMixer(cfg, layer_idx=0).eval()
    with torch.no_grad():
        for name, p in mixer.named_parameters():
            r = torch.randn_like(p) * (0.5 if name in ("A_log", "D", "dt_proj.bias") else 0.3)
            if name == "D":
                r += 1.0
            elif name == "dt_proj.bias":
                r -= 1.0
            p.copy_(r)
    xs = torch.randn(B, T, D)
    with torch.no_grad():
        ys = mixer(xs)
        # An independent check of the formula in the module docs of src/layer/ssm.rs.
        E = EXPAND * D
        x, z = mixer.in_proj(xs).chunk(2, dim=-1)
        x = torch.nn.functional.silu(mixer.conv1d(x.transpose(1, 2))[..., :T]).transpose(1, 2)
        dt, Bm, Cm = torch.split(mixer.x_proj(x), [R, N, N], dim=-1)
        dt = torch.nn.functional.softplus(mixer.dt_proj(dt))
        A = -torch.exp(mixer.A_log)
        h = torch.zeros(B, E, N)
        out = []
        for t in range(T):
            h = torch.exp(dt[:, t, :, None] * A) * h + dt[:, t, :, None] * Bm[:, t, None, :] * x[:, t, :, None]
            out.append((h @ Cm[:, t, :, None]).squeeze(-1) + mixer.D * x[:, t])
        mine = mixer.out_proj(torch.stack(out, 1) * torch.nn.functional.silu(z))
        assert torch.allclose(mine, ys, atol=1e-5), (mine - ys).abs().max()

    tensors = {name: p.detach().clone().contiguous() for name, p in mixer.named_parameters()}
    tensors["input"] = xs.contiguous()
    tensors["output"] = ys.contiguous()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(tensors, OUT)
    print(f"wrote {OUT}: {sorted(tensors)}; max |y| = {ys.abs().max():.4f}")


if __name__ == "__main__":
    main()
