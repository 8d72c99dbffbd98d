//! `--print-plan`: the lowered model tree (one line per node, two spaces per depth; a run of
//! identical copies, as `repeat:` makes, shown once under a `× N` line) and then the ordered
//! plan, as plain text. Each layer describes itself ([`LayerSpec::describe`](crate::layer::LayerSpec)).

use std::fmt::Write;

use super::compile::Compiled;
use super::plan::{RunPlan, TargetPlan};
use crate::layer::EmbedderSpec;
use crate::model::ModelSpec;
use crate::topology::{NodeSpec, NodeView};

/// The whole `--print-plan` text.
pub fn render_plan(c: &Compiled) -> String {
    let plan = &c.plan;
    let mut out = String::new();
    let _ = writeln!(out, "manifest: {}", c.manifest_path.display());
    let _ = writeln!(out, "manifest.version={}", plan.version);
    let _ = writeln!(out, "name={}", plan.name);
    // Each distinct model once, in the order targets use them.
    let mut shown: Vec<&str> = Vec::new();
    for t in &plan.targets {
        if shown.contains(&t.model_path.as_str()) {
            continue;
        }
        shown.push(&t.model_path);
        let users: Vec<&str> = plan
            .targets
            .iter()
            .filter(|u| u.model_path == t.model_path)
            .map(|u| u.name.as_str())
            .collect();
        let _ = writeln!(out, "{} (used by {}):", t.model_path, users.join(", "));
        render_model(&mut out, &t.model, &t.model_path, t);
    }
    let _ = writeln!(out, "plan:");
    for (i, t) in plan.targets.iter().enumerate() {
        render_target(&mut out, i + 1, t);
    }
    for p in &plan.processes {
        let team: Vec<String> = p.team.iter().map(|(r, n)| format!("{r}={n}")).collect();
        let endpoint = match &p.endpoint.url {
            Some(url) => url.clone(),
            None => format!(
                "caramba serve in-process ({})",
                p.endpoint
                    .model
                    .as_deref()
                    .unwrap_or(crate::agents::target::DEFAULT_MODEL)
            ),
        };
        let _ = writeln!(
            out,
            "  process {} (type {}): team [{}], endpoint {endpoint}, budget {} tokens / {} calls / {} s",
            p.name,
            p.process.kind(),
            team.join(", "),
            p.budget.max_tokens,
            p.budget.max_calls,
            p.budget.wall_time_s
        );
    }
    if !plan.entrypoints.is_empty() {
        let eps: Vec<String> = plan
            .entrypoints
            .iter()
            .map(|(k, v)| format!("{k} -> {v}"))
            .collect();
        let _ = writeln!(out, "entrypoints: {}", eps.join(", "));
    }
    let _ = writeln!(out, "default target: {}", plan.default_target);
    out
}

fn render_model(out: &mut String, m: &ModelSpec, path: &str, t: &TargetPlan) {
    let embedder = match &m.embedder {
        EmbedderSpec::Token { vocab_size, d_model } => {
            format!("token vocab_size={vocab_size} d_model={d_model}")
        }
        EmbedderSpec::None => "none".into(),
    };
    let _ = writeln!(
        out,
        "  {path}.type={:?} embedder={embedder} tied_embeddings={}",
        m.kind, m.tied_embeddings
    );
    let _ = writeln!(out, "  {path}.topology:");
    render_node(out, &m.topology, &format!("{path}.topology"), 2);
    let s = &t.stats;
    let _ = writeln!(out, "  parameters: {} ({})", grouped(s.params), human(s.params));
    let _ = writeln!(
        out,
        "  kv cache per token: {} B f32, {} B f16 ({} attention layers)",
        grouped(s.kv_bytes_per_token_f32),
        grouped(s.kv_bytes_per_token_f16),
        s.attention_layers
    );
    let per_kind: Vec<String> = [
        crate::cache::CacheKind::Fp16,
        crate::cache::CacheKind::Q8_0,
        crate::cache::CacheKind::Q4_0,
    ]
    .into_iter()
    .map(|k| {
        format!(
            "{} B {}",
            grouped(super::stats::kv_bytes(&m.topology, k)),
            k.name()
        )
    })
    .collect();
    let _ = writeln!(
        out,
        "  kv cache per token, exact with scales: {}",
        per_kind.join(", ")
    );
}

/// One line for `node`, then its children two spaces deeper. A run of identical copies (what
/// `repeat:` expands to) is shown once under a `× N` line naming the paths it stands for.
pub fn render_node(out: &mut String, node: &NodeSpec, path: &str, depth: usize) {
    let indent = "  ".repeat(depth);
    let (kind, attrs) = match node.view() {
        NodeView::Layer(l) => ("layer", l.describe()),
        NodeView::Parallel(p) => ("topology", format!("reduce={}", name_of(&p.reduce))),
        NodeView::Cyclic(c) => ("topology", format!("iterations={}", c.iterations)),
        NodeView::Stacked(_)
        | NodeView::Sequential(_)
        | NodeView::Nested(_)
        | NodeView::Residual(_)
        | NodeView::Branching(_)
        | NodeView::Recurrent(_) => ("topology", String::new()),
    };
    let sep = if attrs.is_empty() { "" } else { " " };
    let _ = writeln!(
        out,
        "{indent}- {kind}={} path={path}{sep}{attrs}",
        node.type_name()
    );
    let Some((children, repeat)) = node.children() else {
        return;
    };
    let children: Vec<&NodeSpec> = std::iter::repeat_n(children, repeat).flatten().collect();
    let mut i = 0;
    while i < children.len() {
        let (period, copies) = repetition(&children[i..]);
        if copies > 1 {
            let last = i + period * copies - 1;
            let block = if period == 1 {
                format!("layers[{i}]")
            } else {
                format!("layers[{i}..={}]", i + period - 1)
            };
            let _ = writeln!(
                out,
                "{indent}  - × {copies}: {path}.layers[{i}..={last}] repeats {block} (shown once)"
            );
            for (k, child) in children[i..i + period].iter().enumerate() {
                render_node(out, child, &format!("{path}.layers[{}]", i + k), depth + 2);
            }
            i = last + 1;
        } else {
            render_node(out, children[i], &format!("{path}.layers[{i}]"), depth + 1);
            i += 1;
        }
    }
}

/// Longest blocks a repetition is looked for in (bounds the search on huge flat topologies).
const MAX_PERIOD: usize = 64;

/// `(period, copies)` of the run of identical blocks that starts `nodes`: the shortest period
/// whose block repeats at least twice back to back, and how many times it does; `(1, 1)` when none.
fn repetition(nodes: &[&NodeSpec]) -> (usize, usize) {
    for period in 1..=MAX_PERIOD.min(nodes.len() / 2) {
        let block = &nodes[..period];
        let copies = nodes
            .chunks_exact(period)
            .take_while(|chunk| chunk == &block)
            .count();
        if copies > 1 {
            return (period, copies);
        }
    }
    (1, 1)
}

fn render_target(out: &mut String, n: usize, t: &TargetPlan) {
    let _ = writeln!(
        out,
        "  {n}. target {} ({}, trainer={})",
        t.name,
        name_of(&t.kind),
        t.trainer
    );
    if !t.description.is_empty() {
        let _ = writeln!(out, "     description: {}", t.description);
    }
    let _ = writeln!(
        out,
        "     model: {} ({} parameters)",
        t.model_path,
        human(t.stats.params)
    );
    render_data(out, &t.data);
    if !t.system.is_language_model() {
        let metrics: Vec<String> = t.metrics.iter().map(|m| m.to_string()).collect();
        let _ = writeln!(
            out,
            "     system: {} objective={} metrics=[{}]",
            t.system,
            t.objective,
            metrics.join(", ")
        );
    }
    for (j, r) in t.runs.iter().enumerate() {
        render_run(out, n, j + 1, r);
    }
    if t.benchmarks.is_empty() {
        let _ = writeln!(out, "     benchmarks: none");
    } else {
        let _ = writeln!(out, "     benchmarks: {}", t.benchmarks.len());
        for (i, b) in t.benchmarks.iter().enumerate() {
            let _ = writeln!(out, "       {}. {}", i + 1, b.describe());
        }
    }
}

fn render_run(out: &mut String, n: usize, j: usize, r: &RunPlan) {
    let exp = r.exp.as_ref().map(|e| format!(" exp={e}")).unwrap_or_default();
    if !r.mode.is_train() {
        let g = r.generate.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "     {n}.{j} run {}: mode={} model={} prompt={:?} max_new_tokens={} temperature={} cache={}{exp}",
            r.id,
            r.mode,
            r.ckpt.as_deref().unwrap_or("(the training run above it)"),
            g.prompt,
            g.max_new_tokens,
            g.temperature,
            g.cache_kind.as_deref().unwrap_or("fp32"),
        );
        return;
    }
    let t = &r.train;
    let _ = writeln!(
        out,
        "     {n}.{j} run {}: seed={} steps={} batch={}x{} lr={} optimizer={} schedule={} warmup={} device={} dtype={} save_every={}",
        r.id,
        r.seed,
        r.steps,
        t.batch_size,
        t.grad_accum,
        t.lr,
        name_of(&t.optimizer),
        name_of(&t.schedule),
        t.warmup_steps,
        t.device,
        t.dtype,
        t.save_every.unwrap_or_default()
    );
    if !exp.is_empty() {
        let _ = writeln!(out, "        {exp}");
    }
    let m = &r.memory;
    let _ = writeln!(
        out,
        "         memory at least: {} (weights {}, gradients {}, optimizer {}, activations {})",
        super::memory::gib(m.total()),
        super::memory::gib(m.weights),
        super::memory::gib(m.gradients),
        super::memory::gib(m.optimizer),
        super::memory::gib(m.activations)
    );
    let _ = writeln!(
        out,
        "         verify: {}",
        if r.verify.is_empty() {
            "none".into()
        } else {
            r.verify.len().to_string()
        }
    );
}

/// The manifest spelling of a unit enum variant (`adamw`, `cosine`, `experiment`).
fn name_of<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

/// `1234567` → `1,234,567`.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1234567` → `1.23M`.
fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(human(135_000_000), "135.00M");
        assert_eq!(human(1_500), "1.5K");
    }
}

fn render_data(out: &mut String, data: &crate::data::TargetData) {
    match data {
        crate::data::TargetData::Tokens(d) => {
            let _ = writeln!(
                out,
                "     data: {} block_size={} tokenizer={} val_frac={}{}",
                d.path,
                d.block_size,
                d.tokenizer.as_deref().unwrap_or("bytes"),
                d.val_frac.unwrap_or_default(),
                if d.prepare.is_some() {
                    " (prepared on first use)"
                } else {
                    ""
                }
            );
        }
        crate::data::TargetData::Supervised(s) => {
            let shape = match (s.image, s.width()) {
                (Some(i), _) => format!("image={}x{}x{}", i.height, i.width, i.channels),
                (None, Some(w)) => format!("n_features={w}"),
                (None, None) => "n_features=?".into(),
            };
            let _ = writeln!(
                out,
                "     data: npy_supervised features={} labels={} {shape} n_classes={} test_frac={} val_frac={} split_seed={}{}",
                s.features,
                s.labels,
                s.n_classes,
                s.test_frac,
                s.val_frac,
                s.split_seed,
                if s.prepare.is_some() {
                    " (prepared on first use)"
                } else {
                    ""
                }
            );
        }
    }
}
