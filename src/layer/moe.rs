//! Sparse mixture of SwiGLU experts (`type: MoELayer`; alias `moe`) — Shazeer et al. 2017,
//! Switch (Fedus et al. 2021), Mixtral (Jiang et al. 2024, HF `MixtralSparseMoeBlock`).
//!
//! For each token x (a row of the flattened (b·t, d_model) input):
//!
//! ```text
//! p      = softmax(gate(x))                    router probabilities over E experts (in f32)
//! S      = top_k(p)                            the k chosen experts
//! w_e    = p_e / Σ_{j∈S} p_j   for e ∈ S       renormalised over the k (Mixtral's convention)
//! y      = Σ_{e∈S} w_e · expert_e(x)
//! expert_e(x) = w2_e(silu(w1_e(x)) ⊙ w3_e(x))  a SwiGLU, no biases
//! ```
//!
//! Tokens are dispatched per expert: the rows routed to expert e are gathered (`index_select`),
//! run through e alone, scaled by their weights and scattered back (`index_add`) — no dense
//! all-expert compute. The top-k choice is made on the host (one small (N, E) copy per layer).
//!
//! Load-balancing auxiliary loss (training forward only), over the N tokens of the batch:
//!
//! ```text
//! aux = E · Σ_e f_e · P_e,   f_e = count_e / (N·k)  (share of the N·k routing choices that went to e)
//!                            P_e = (1/N) Σ_x p_e(x) (mean router probability of e)
//! ```
//!
//! It is 1 when routing is perfectly balanced (the seed's normalisation; HF's Mixtral
//! `load_balancing_loss_func` is `top_k` times this). `aux_loss_weight · aux` is pushed to
//! [`ForwardCtx::aux_losses`]; the trainer adds the sum to the training loss and logs it.
//!
//! Weight names follow HF Mixtral's `block_sparse_moe`: `gate` (the router, (E, d_model), zero
//! when fresh as in the seed: routing starts uniform), `experts.{i}.w1` (gate), `w3` (up), `w2`
//! (down). Shapes: (b, t, d_model) -> (b, t, d_model).

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::linear::{Projection, projection};
use super::spec::{Layer, LayerSpec, LayerType, SpecProblem, Widths, check_dim};
use crate::model::context::ForwardCtx;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MoeSpec {
    /// Width of the residual stream.
    pub d_model: usize,
    /// Inner width of each expert's SwiGLU.
    pub d_ff: usize,
    /// Number of experts E. Default: 8.
    #[serde(default = "default_experts")]
    pub num_experts: usize,
    /// Experts per token k. Default: 2.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Weight of the load-balancing loss added to the training loss. Default: 0.01.
    #[serde(default = "default_aux_weight")]
    pub aux_loss_weight: f64,
}

fn default_experts() -> usize {
    8
}

fn default_top_k() -> usize {
    2
}

fn default_aux_weight() -> f64 {
    0.01
}

impl LayerType for MoeSpec {
    const NAME: &'static str = "MoELayer";
    const ALIASES: &'static [&'static str] = &["moe"];
}

impl LayerSpec for MoeSpec {
    fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        check_dim(&mut out, "d_model", self.d_model);
        if !check_dim(&mut out, "d_ff", self.d_ff)
            && let Some(p) = out.last_mut()
        {
            p.help = Some(format!(
                "the inner width of each expert, e.g. d_ff: {} (4 · d_model)",
                self.d_model.saturating_mul(4)
            ));
        }
        if !check_dim(&mut out, "num_experts", self.num_experts)
            && let Some(p) = out.last_mut()
        {
            p.help = Some("Mixtral uses num_experts: 8".into());
        }
        if self.top_k == 0 {
            out.push(
                SpecProblem::new("top_k", "must be at least 1 (got 0)")
                    .with_help("each token goes to top_k experts; Mixtral uses top_k: 2"),
            );
        } else if self.num_experts > 0 && self.top_k > self.num_experts {
            out.push(
                SpecProblem::new(
                    "top_k",
                    format!(
                        "top_k = {} is larger than num_experts = {}",
                        self.top_k, self.num_experts
                    ),
                )
                .with_help(format!(
                    "a token can go to at most num_experts experts: use top_k: {} or fewer",
                    self.num_experts
                )),
            );
        }
        if !(self.aux_loss_weight.is_finite() && self.aux_loss_weight >= 0.0) {
            out.push(
                SpecProblem::new(
                    "aux_loss_weight",
                    format!("must be finite and non-negative (got {})", self.aux_loss_weight),
                )
                .with_help("0 disables the load-balancing loss; Switch and Mixtral use 0.01"),
            );
        }
        out
    }

    fn widths(&self) -> Option<Widths> {
        Some(Widths::preserving("d_model", self.d_model))
    }

    /// E · 3 · d_model · d_ff (experts) + E · d_model (router).
    fn params(&self) -> u64 {
        let d = self.d_model as u64;
        let e = self.num_experts as u64;
        e.saturating_mul(d)
            .saturating_mul(self.d_ff as u64)
            .saturating_mul(3)
            .saturating_add(e.saturating_mul(d))
    }

    fn describe(&self) -> String {
        format!(
            "d_model={} d_ff={} num_experts={} top_k={} aux_loss_weight={}",
            self.d_model, self.d_ff, self.num_experts, self.top_k, self.aux_loss_weight
        )
    }

    fn build(&self, vb: VarBuilder, _next_slot: &mut usize) -> Result<Box<dyn Layer>> {
        Ok(Box::new(Moe::build(self, vb)?))
    }
}

/// One SwiGLU expert with Mixtral's names.
struct Expert {
    w1: Projection,
    w2: Projection,
    w3: Projection,
}

impl Expert {
    /// (m, d_model) -> (m, d_model).
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = crate::ops::swiglu::silu_mul(&self.w1.forward(xs)?, &self.w3.forward(xs)?)?;
        self.w2.forward(&h)
    }
}

pub struct Moe {
    gate: Linear,
    experts: Vec<Expert>,
    top_k: usize,
    aux_loss_weight: f64,
}

/// What one routed forward produced besides its output.
pub struct Routing {
    /// (N, E) router probabilities (f32, differentiable).
    pub probs: Tensor,
    /// The chosen experts of each token, best first.
    pub chosen: Vec<Vec<usize>>,
    /// The unweighted load-balancing loss `E · Σ_e f_e · P_e` (a scalar, differentiable in P).
    pub aux: Tensor,
}

impl Moe {
    /// Router at `<path>.gate` (zeros when fresh), experts at `<path>.experts.{i}.{w1,w2,w3}`.
    pub fn build(spec: &MoeSpec, vb: VarBuilder) -> Result<Self> {
        let gate =
            vb.pp("gate")
                .get_with_hints((spec.num_experts, spec.d_model), "weight", Init::Const(0.0))?;
        let experts = (0..spec.num_experts)
            .map(|i| {
                let vb = vb.pp("experts").pp(i);
                Ok(Expert {
                    w1: projection(spec.d_model, spec.d_ff, false, vb.pp("w1"))?,
                    w2: projection(spec.d_ff, spec.d_model, false, vb.pp("w2"))?,
                    w3: projection(spec.d_model, spec.d_ff, false, vb.pp("w3"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            gate: Linear::new(gate, None),
            experts,
            top_k: spec.top_k,
            aux_loss_weight: spec.aux_loss_weight,
        })
    }

    /// (b, t, d_model) -> ((b, t, d_model), routing).
    pub fn forward_routed(&self, xs: &Tensor) -> Result<(Tensor, Routing)> {
        let (b, t, d) = xs.dims3()?;
        let (n, e, k) = (b * t, self.experts.len(), self.top_k);
        let flat = xs.reshape((n, d))?;
        // why: the softmax runs in f32 whatever the activations' dtype, as Mixtral's does.
        let logits = self.gate.forward(&flat)?.to_dtype(DType::F32)?;
        let probs = candle_nn::ops::softmax(&logits, D::Minus1)?;
        let host = probs.to_vec2::<f32>()?;
        let chosen: Vec<Vec<usize>> = host.iter().map(|p| top_k(p, k)).collect();
        // (N, k) chosen probabilities, renormalised over the k.
        let idx: Vec<u32> = chosen.iter().flatten().map(|&i| i as u32).collect();
        let idx = Tensor::from_vec(idx, (n, k), xs.device())?;
        let top = probs.gather(&idx, 1)?;
        let weights = top
            .broadcast_div(&top.sum_keepdim(1)?)?
            .to_dtype(xs.dtype())?
            .reshape(n * k)?;

        // Per expert: the routing slots (token·k + j) that chose it.
        let mut slots: Vec<Vec<u32>> = vec![Vec::new(); e];
        for (tok, c) in chosen.iter().enumerate() {
            for (j, &ex) in c.iter().enumerate() {
                slots[ex].push((tok * k + j) as u32);
            }
        }
        let mut ys = Tensor::zeros((n, d), xs.dtype(), xs.device())?;
        for (expert, slots) in self.experts.iter().zip(&slots) {
            if slots.is_empty() {
                continue;
            }
            let tokens: Vec<u32> = slots.iter().map(|s| s / k as u32).collect();
            let m = slots.len();
            let slots = Tensor::from_vec(slots.clone(), m, xs.device())?;
            let tokens = Tensor::from_vec(tokens, m, xs.device())?;
            let w = weights.index_select(&slots, 0)?.unsqueeze(1)?;
            let out = expert.forward(&flat.index_select(&tokens, 0)?)?;
            ys = ys.index_add(&tokens, &out.broadcast_mul(&w)?, 0)?;
        }

        // aux = E · Σ_e f_e · P_e with f_e = count_e / (N·k).
        let f: Vec<f32> = slots.iter().map(|s| s.len() as f32 / (n * k) as f32).collect();
        let f = Tensor::from_vec(f, e, xs.device())?;
        let p_mean = probs.mean(0)?;
        let aux = ((f * p_mean)?.sum_all()? * e as f64)?;
        Ok((ys.reshape((b, t, d))?, Routing { probs, chosen, aux }))
    }
}

/// Indices of the `k` largest values of `p`, largest first (ties: the lower index first).
fn top_k(p: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

impl Layer for Moe {
    fn forward(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let (ys, routing) = self.forward_routed(xs)?;
        if ctx.train && self.aux_loss_weight > 0.0 {
            ctx.aux_losses.push((routing.aux * self.aux_loss_weight)?);
        }
        Ok(ys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;
    use rand::SeedableRng;

    fn spec(d: usize, f: usize, e: usize, k: usize) -> MoeSpec {
        MoeSpec {
            d_model: d,
            d_ff: f,
            num_experts: e,
            top_k: k,
            aux_loss_weight: 0.01,
        }
    }

    /// A MoE layer whose every weight, the router included, is N(0, 0.5²): routing is non-trivial.
    fn random_moe(s: &MoeSpec) -> (Moe, VarMap) {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let moe = Moe::build(s, vb).expect("build");
        for var in map.all_vars() {
            let r = Tensor::randn(0f32, 0.5, var.shape(), &Device::Cpu).expect("randn");
            var.set(&r).expect("set");
        }
        (moe, map)
    }

    fn rows(t: &Tensor) -> Vec<Vec<f64>> {
        t.to_dtype(DType::F64)
            .and_then(|t| t.to_vec2::<f64>())
            .expect("2-d tensor")
    }

    fn get(map: &VarMap, name: &str) -> Vec<Vec<f64>> {
        let data = map.data().lock().expect("lock");
        rows(data[name].as_tensor())
    }

    fn matvec(w: &[Vec<f64>], x: &[f64]) -> Vec<f64> {
        w.iter()
            .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect()
    }

    /// Per token in f64: (outputs, router probabilities, chosen experts).
    fn reference(
        map: &VarMap,
        s: &MoeSpec,
        xs: &[Vec<f64>],
    ) -> (Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<Vec<usize>>) {
        let gate = get(map, "gate.weight");
        let (mut ys, mut ps, mut cs) = (Vec::new(), Vec::new(), Vec::new());
        for x in xs {
            let logits = matvec(&gate, x);
            let max = logits.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            let p: Vec<f64> = logits.iter().map(|l| (l - max).exp() / z).collect();
            let mut order: Vec<usize> = (0..s.num_experts).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            order.truncate(s.top_k);
            let norm: f64 = order.iter().map(|&e| p[e]).sum();
            let mut y = vec![0f64; s.d_model];
            for &e in &order {
                let w1 = get(map, &format!("experts.{e}.w1.weight"));
                let w2 = get(map, &format!("experts.{e}.w2.weight"));
                let w3 = get(map, &format!("experts.{e}.w3.weight"));
                let g = matvec(&w1, x);
                let u = matvec(&w3, x);
                let h: Vec<f64> = g
                    .iter()
                    .zip(&u)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                for (yi, oi) in y.iter_mut().zip(matvec(&w2, &h)) {
                    *yi += p[e] / norm * oi;
                }
            }
            ys.push(y);
            ps.push(p);
            cs.push(order);
        }
        (ys, ps, cs)
    }

    #[test]
    fn forward_matches_a_per_token_reference() -> Result<()> {
        let s = spec(8, 12, 6, 2);
        let (moe, map) = random_moe(&s);
        let xs = Tensor::randn(0f32, 1.0, (3, 7, 8), &Device::Cpu)?;
        let (ys, routing) = moe.forward_routed(&xs)?;
        let (want, _, chosen) = reference(&map, &s, &rows(&xs.reshape((21, 8))?));
        assert_eq!(routing.chosen, chosen);
        let used: std::collections::BTreeSet<usize> = chosen.iter().flatten().copied().collect();
        assert!(used.len() > 2, "routing is non-trivial: {used:?}");
        let mut worst = 0f64;
        for (a, b) in want.iter().zip(rows(&ys.reshape((21, 8))?)) {
            for (a, b) in a.iter().zip(&b) {
                worst = worst.max((a - b).abs());
            }
        }
        assert!(worst < 1e-4, "worst |Δ| = {worst}");
        Ok(())
    }

    #[test]
    fn aux_loss_equals_its_formula_and_is_pushed_weighted_in_training() -> Result<()> {
        let s = spec(8, 12, 4, 2);
        let (moe, map) = random_moe(&s);
        let xs = Tensor::randn(0f32, 1.0, (2, 5, 8), &Device::Cpu)?;
        let (_, p, chosen) = reference(&map, &s, &rows(&xs.reshape((10, 8))?));
        let n = p.len() as f64;
        let want: f64 = (0..s.num_experts)
            .map(|e| {
                let f = chosen.iter().flatten().filter(|&&c| c == e).count() as f64 / (n * s.top_k as f64);
                let pe = p.iter().map(|p| p[e]).sum::<f64>() / n;
                f * pe
            })
            .sum::<f64>()
            * s.num_experts as f64;
        let (_, routing) = moe.forward_routed(&xs)?;
        let got = f64::from(routing.aux.to_scalar::<f32>()?);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");

        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut ctx = ForwardCtx::train(&mut rng);
        Layer::forward(&moe, &xs, &mut ctx)?;
        let pushed = f64::from(ctx.aux_loss()?.expect("pushed").to_scalar::<f32>()?);
        assert!((pushed - 0.01 * want).abs() < 1e-7, "{pushed}");
        let mut ctx = ForwardCtx::eval();
        Layer::forward(&moe, &xs, &mut ctx)?;
        assert!(ctx.aux_losses.is_empty(), "no auxiliary loss in evaluation");
        Ok(())
    }

    #[test]
    fn gradients_reach_the_router_and_every_expert_that_got_tokens() -> Result<()> {
        let s = spec(6, 10, 5, 2);
        let (moe, map) = random_moe(&s);
        let xs = Tensor::randn(0f32, 1.0, (2, 8, 6), &Device::Cpu)?;
        let (ys, routing) = moe.forward_routed(&xs)?;
        let loss = (ys.sqr()?.sum_all()? + routing.aux)?;
        let grads = loss.backward()?;
        let data = map.data().lock().expect("lock");
        let norm = |name: &str| -> Result<f32> {
            let g = grads.get(data[name].as_tensor());
            match g {
                Some(g) => g.sqr()?.sum_all()?.to_scalar::<f32>(),
                None => Ok(0.0),
            }
        };
        let g = norm("gate.weight")?;
        assert!(g > 0.0 && g.is_finite(), "router: {g}");
        for e in 0..s.num_experts {
            let got = routing.chosen.iter().flatten().any(|&c| c == e);
            for w in ["w1", "w2", "w3"] {
                let g = norm(&format!("experts.{e}.{w}.weight"))?;
                if got {
                    assert!(g > 0.0 && g.is_finite(), "expert {e} {w}: {g}");
                } else {
                    assert_eq!(g, 0.0, "expert {e} got no tokens");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn a_fresh_router_is_zero_and_routes_uniformly() -> Result<()> {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let moe = Moe::build(&spec(4, 8, 4, 2), vb)?;
        let xs = Tensor::randn(0f32, 1.0, (1, 3, 4), &Device::Cpu)?;
        let (_, routing) = moe.forward_routed(&xs)?;
        let p = rows(&routing.probs);
        assert!(p.iter().flatten().all(|&v| (v - 0.25).abs() < 1e-7));
        assert!(routing.chosen.iter().all(|c| c == &[0, 1]));
        // f = (1/2, 1/2, 0, 0), P = 1/4 each: aux = 4 · (1/8 + 1/8) = 1.
        assert!((routing.aux.to_scalar::<f32>()? - 1.0).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn bad_sizes_are_problems_at_their_fields() {
        let fields = |s: MoeSpec| -> Vec<String> { s.problems().into_iter().map(|p| p.field).collect() };
        assert!(fields(spec(8, 16, 8, 2)).is_empty());
        assert_eq!(fields(spec(8, 16, 4, 5)), ["top_k"]);
        assert_eq!(fields(spec(8, 16, 4, 0)), ["top_k"]);
        assert_eq!(fields(spec(8, 16, 0, 2)), ["num_experts"]);
        assert_eq!(fields(spec(8, 0, 4, 2)), ["d_ff"]);
        let mut s = spec(8, 16, 4, 2);
        s.aux_loss_weight = -1.0;
        assert_eq!(fields(s), ["aux_loss_weight"]);
    }
}
