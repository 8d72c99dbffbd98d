//! The original's forms inside a target: component specs (`{ref, impl, config}`), `task`,
//! `backend`, a group's `data: "path.npy"`, runs (`mode`, `train:` keys of the PyTorch trainer,
//! `verify:` fields that moved) and the benchmarks (see [`super::benchmarks`]).

use serde_json::{Map, Value};

use super::{Rewriter, as_count, dtype_spelling, is_off};
use crate::manifest::load::join_key;

/// A value written in one or more runs that today lives once on the target, with where each was.
#[derive(Default)]
struct PerTarget {
    /// `train.block_size` of the runs → `data.block_size`.
    block_size: Vec<(u64, String)>,
    /// `verify: {type: compare|fidelity, batches}` → `upcycle.verify_batches`.
    verify_batches: Vec<(u64, String)>,
    /// `train.teacher_ckpt` → the target's `teacher`.
    teacher: Vec<(String, String)>,
}

impl Rewriter<'_> {
    pub(super) fn target(&mut self, t: &mut Map<String, Value>, path: &str) {
        if t.get("type").and_then(Value::as_str) == Some("process") {
            return;
        }
        for key in ["system", "objective", "trainer", "data", "task"] {
            self.component(t, key, path);
        }
        if let Some(task) = t.remove("task") {
            let ok = matches!(
                task.as_str(),
                Some(
                    "task.language_modeling" | "language_modeling" | "task.classification" | "classification"
                )
            );
            if !ok {
                self.err(
                    &join_key(path, "task"),
                    format!("task {task} is not one caramba has"),
                    "leave `task:` out: the `system:` (language_model, mlp_classifier, vit) says what is trained",
                );
            }
        }
        if let Some(backend) = t.remove("backend")
            && !matches!(backend.as_str(), Some("torch" | "pt" | "candle"))
        {
            self.err(
                &join_key(path, "backend"),
                format!("backend {backend} is a Python framework (the original ran on torch, Lightning or MLX)"),
                "leave `backend:` out: caramba runs on candle; pick the device with `train.device` (cpu, cuda, metal)",
            );
        }
        if let Some(model) = t.get_mut("model") {
            self.model(model);
        }
        let mut per = PerTarget::default();
        let upcycle = t
            .get("trainer")
            .and_then(Value::as_str)
            .is_some_and(|s| s.ends_with("upcycle"));
        if let Some(Value::Array(runs)) = t.get_mut("runs") {
            for (j, run) in runs.iter_mut().enumerate() {
                if let Value::Object(run) = run {
                    self.run(run, &format!("{path}.runs[{j}]"), &mut per);
                }
            }
        }
        self.data(t, path, &per.block_size);
        self.verify_batches(t, path, &per.verify_batches);
        self.teacher(t, path, &per.teacher);
        if let Some(Value::Array(benches)) = t.get_mut("benchmarks") {
            for (j, b) in benches.iter_mut().enumerate() {
                if let Value::Object(b) = b {
                    self.benchmark(b, &format!("{path}.benchmarks[{j}]"), upcycle);
                }
            }
        }
    }

    /// `key: {ref, impl?, config?}` (the v2 component spec) → `key: ref` (plus what its config
    /// says, where that has a place here); `impl: python:…` is refused.
    fn component(&mut self, t: &mut Map<String, Value>, key: &str, path: &str) {
        let at = join_key(path, key);
        let Some(Value::Object(spec)) = t.get_mut(key) else {
            return;
        };
        if let Some(imp) = spec.get("impl") {
            let what = imp.as_str().unwrap_or("");
            self.err(
                &join_key(&at, "impl"),
                format!(
                    "`impl: {what}` loads Python code, which caramba (one Rust binary) cannot run"
                ),
                format!(
                    "name a built-in component instead (`{key}: {}`); a new one is a Rust enum variant — see docs/systems.md",
                    match key {
                        "system" => "language_model",
                        "objective" => "next_token_ce",
                        "trainer" => "standard",
                        "data" => "{path: tokens.npy, block_size: 512}",
                        _ => "…",
                    }
                ),
            );
            return;
        }
        let Some(Value::String(r)) = spec.get("ref").cloned() else {
            return;
        };
        let config = match spec.get("config") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(c)) => c.clone(),
            Some(_) => return,
        };
        if spec.keys().any(|k| k != "ref" && k != "config") {
            // why: other keys are typed as they are, and reported as unknown there.
            return;
        }
        match key {
            "data" => {
                // `{ref: dataset.tokens, config: {path, block_size}}` → `{type: tokens, path, block_size}`.
                let mut out = Map::new();
                out.insert("type".into(), Value::String(r));
                for (k, v) in config {
                    self.moved(&format!("{at}.config.{k}"), &join_key(&at, &k));
                    out.insert(k, v);
                }
                t.insert(key.into(), Value::Object(out));
            }
            "system" => {
                let mut config = config;
                if let Some(model) = config.remove("model") {
                    if t.contains_key("model") {
                        self.err(
                            &format!("{at}.config.model"),
                            "the target has a model twice: `model:` and `system.config.model`",
                            "keep one; today's form is the target's `model:`",
                        );
                    } else {
                        self.moved(&format!("{at}.config.model"), &join_key(path, "model"));
                        t.insert("model".into(), model);
                    }
                }
                if let Some(k) = config.keys().next() {
                    self.err(
                        &format!("{at}.config.{k}"),
                        format!("`{k}` has no place in a system here"),
                        "a system takes no settings; put the model in the target's `model:`",
                    );
                }
                t.insert(key.into(), Value::String(r));
            }
            _ => {
                if let Some(k) = config.keys().next() {
                    self.err(
                        &format!("{at}.config.{k}"),
                        format!("`{k}`: a {key} takes no settings here"),
                        match key {
                            "trainer" => "upcycle settings go in the target's `upcycle:` block, run settings in each run's `train:`",
                            _ => "write the component by its name alone",
                        },
                    );
                }
                t.insert(key.into(), Value::String(r));
            }
        }
    }

    /// One run: `mode`, the trainer's `train:` keys, the `verify:` fields that moved.
    fn run(&mut self, run: &mut Map<String, Value>, path: &str, per: &mut PerTarget) {
        if let Some(Value::String(mode)) = run.get_mut("mode") {
            *mode = mode.to_ascii_lowercase();
            if mode == "train" {
                run.remove("mode");
            }
        }
        if let Some(Value::Object(train)) = run.get_mut("train") {
            let moved = self.train(train, &join_key(path, "train"), per);
            if let Some(phase) = moved {
                let from = join_key(path, "train.phase");
                match run.get("phase") {
                    Some(p) if *p != phase => self.err(
                        &from,
                        format!("the run's phase is written twice and differs: {p} and train.phase {phase}"),
                        "keep one; today's form is the run's `phase:`",
                    ),
                    _ => {
                        self.moved(&from, &join_key(path, "phase"));
                        run.insert("phase".into(), phase);
                    }
                }
            }
        }
        match run.get_mut("verify") {
            Some(Value::Object(check)) => self.verify(check, &join_key(path, "verify"), per),
            Some(Value::Array(checks)) => {
                for (i, c) in checks.iter_mut().enumerate() {
                    if let Value::Object(c) = c {
                        self.verify(c, &format!("{path}.verify[{i}]"), per);
                    }
                }
            }
            _ => {}
        }
    }

    /// The PyTorch trainer's keys of a run's `train:`; returns a `phase` that must move to the run.
    fn train(&mut self, train: &mut Map<String, Value>, path: &str, per: &mut PerTarget) -> Option<Value> {
        let at = |k: &str| join_key(path, k);
        self.spellings(train);
        if let Some(v) = train.remove("gradient_accumulation_steps") {
            if train.contains_key("grad_accum") {
                self.err(
                    &at("gradient_accumulation_steps"),
                    "written twice: `gradient_accumulation_steps` and `grad_accum`",
                    "keep `grad_accum`",
                );
            } else {
                self.moved(&at("gradient_accumulation_steps"), &at("grad_accum"));
                train.insert("grad_accum".into(), v);
            }
        }
        if let Some(v) = train.remove("block_size") {
            match as_count(&v) {
                Some(n) => per.block_size.push((n, at("block_size"))),
                None => {
                    train.insert("block_size".into(), v);
                }
            }
        }
        if let Some(v) = train.remove("teacher_ckpt") {
            match v.as_str() {
                Some(s) => per.teacher.push((teacher_source(s), at("teacher_ckpt"))),
                None => {
                    train.insert("teacher_ckpt".into(), v);
                }
            }
        }
        // AMP: caramba computes in the run's dtype (f32 master weights in the optimizer), so
        // `use_amp: true, amp_dtype: X` is `dtype: X`.
        let amp = train.remove("use_amp");
        let amp_dtype = train.remove("amp_dtype");
        let amp_on =
            matches!(&amp, Some(Value::Bool(true))) || amp.as_ref().and_then(Value::as_str) == Some("auto");
        if amp_on {
            let want = match amp_dtype.as_ref().and_then(Value::as_str) {
                Some(s) => dtype_spelling(s).map_or_else(|| s.to_string(), String::from),
                None => "auto".to_string(),
            };
            match train.get("dtype").and_then(Value::as_str) {
                // why: the seed's configs pair `dtype: float32` (the parameters) with AMP; the
                // compute dtype is what caramba's `dtype` means.
                None | Some("f32" | "auto") => {
                    self.moved(&at("use_amp"), &at("dtype"));
                    train.insert("dtype".into(), Value::String(want));
                }
                Some(d) if d == want => {}
                Some(d) => {
                    let d = d.to_string();
                    self.err(
                        &at("use_amp"),
                        format!("`use_amp` with `amp_dtype: {want}` and `dtype: {d}` disagree"),
                        "caramba computes in one dtype (with f32 master weights in the optimizer): write `dtype:` only",
                    );
                }
            }
        }
        for (key, help) in [
            (
                "compile_model",
                "torch.compile is PyTorch's; caramba's kernels are compiled ahead of time and the fused ones are on by default (`train.fused`): remove the key",
            ),
            (
                "num_workers",
                "caramba reads memory-mapped token files in its own process (no DataLoader workers): remove the key",
            ),
            (
                "pin_memory",
                "caramba has no PyTorch DataLoader to pin memory for: remove the key",
            ),
            (
                "activation_checkpointing",
                "caramba has no activation checkpointing yet: remove the key, and lower `batch_size` with a higher `grad_accum` to save memory",
            ),
            (
                "distributed_strategy",
                "DDP/FSDP are PyTorch's: caramba trains on one device; remove the key",
            ),
        ] {
            let Some(v) = train.remove(key) else { continue };
            if !is_off(&v) {
                self.err(
                    &at(key),
                    format!("`{key}: {v}` asks for PyTorch machinery caramba does not have"),
                    help,
                );
            }
        }
        // The seed's flat `orchestrator_<field>` keys are the `orchestrator:` block's fields;
        // with `orchestrator_enabled` off (the seed's default) they tuned nothing and go.
        let flat: Vec<String> = train
            .keys()
            .filter(|k| k.starts_with("orchestrator_"))
            .cloned()
            .collect();
        if !flat.is_empty() {
            let on = train.get("orchestrator_enabled").is_some_and(|v| !is_off(v));
            let mut block = Map::new();
            for k in flat {
                if let Some(v) = train.remove(&k) {
                    let field = k.trim_start_matches("orchestrator_");
                    self.moved(&at(&k), &join_key(&at("orchestrator"), field));
                    block.insert(field.to_string(), v);
                }
            }
            if on && train.contains_key("orchestrator") {
                self.err(
                    &at("orchestrator_enabled"),
                    "written twice: `orchestrator_*` keys and an `orchestrator:` block",
                    "keep the `orchestrator:` block",
                );
            } else if on {
                train.insert("orchestrator".into(), Value::Object(block));
            }
        }
        for key in [
            "compile_mode",
            "activation_checkpoint_threshold",
            "distributed_backend",
        ] {
            train.remove(key);
        }
        if let Some(v) = train.remove("batch_size") {
            if v.as_str() == Some("auto") {
                self.err(
                    &at("batch_size"),
                    "`batch_size: auto` is not supported: caramba does not search for a batch size",
                    "write a number (default 16); `--print-plan` shows the memory a run needs at the least",
                );
            } else {
                train.insert("batch_size".into(), v);
            }
        }
        for key in ["cache_teacher_outputs", "cache_teacher"] {
            if let Some(v) = train.remove(key)
                && is_off(&v)
            {
                self.warn(
                    &at(key),
                    format!(
                        "`{key}: false` is ignored: an upcycle always computes the teacher's outputs once per batch (`upcycle.teacher_batches`) and reuses them"
                    ),
                );
            }
        }
        train.remove("phase")
    }

    /// `compare`/`fidelity` `batches` (now per target) and `eval` fields that caramba decides.
    fn verify(&mut self, check: &mut Map<String, Value>, path: &str, per: &mut PerTarget) {
        let at = |k: &str| join_key(path, k);
        let kind = check
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if matches!(kind.as_str(), "compare" | "fidelity")
            && let Some(v) = check.remove("batches")
        {
            match as_count(&v) {
                Some(n) => per.verify_batches.push((n, at("batches"))),
                None => {
                    check.insert("batches".into(), v);
                }
            }
        }
        if kind == "kvcache" {
            if let Some(v) = check.remove("min_reduction_ratio") {
                self.moved(&at("min_reduction_ratio"), &at("min_reduction"));
                check.insert("min_reduction".into(), v);
            }
            for k in ["n_layers", "batch_size", "max_seq_len", "teacher", "student"] {
                check.remove(k);
            }
        }
        if kind != "eval" {
            return;
        }
        if check.remove("tokenizer").is_some() {
            self.warn(
                &at("tokenizer"),
                "`tokenizer:` is ignored: eval cases are encoded with the models' own tokenizer (the teacher's, which the student shares)",
            );
        }
        if check.remove("context_window").is_some() {
            self.warn(
                &at("context_window"),
                "`context_window:` is ignored: prompts are scored whole, up to the model's own context",
            );
        }
        let Some(Value::Array(cases)) = check.get_mut("cases") else {
            return;
        };
        for (i, case) in cases.iter_mut().enumerate() {
            let Value::Object(case) = case else { continue };
            let cpath = format!("{path}.cases[{i}]");
            self.case_answer(case, &cpath);
        }
    }

    /// `answer: "Paris"` of a `choice_logprob` case → its index in `choices`; `answer: "4"` of an
    /// `int_greedy` case → 4.
    fn case_answer(&mut self, case: &mut Map<String, Value>, path: &str) {
        let kind = case.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
        let Some(Value::String(answer)) = case.get("answer").cloned() else {
            return;
        };
        match kind.as_str() {
            "choice_logprob" => {
                let choices: Vec<String> = case
                    .get("choices")
                    .and_then(Value::as_array)
                    .map(|cs| cs.iter().filter_map(|c| c.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                match choices.iter().position(|c| *c == answer) {
                    Some(i) => {
                        case.insert("answer".into(), Value::from(i));
                    }
                    None => self.err(
                        &join_key(path, "answer"),
                        format!("answer {answer:?} is not one of the choices"),
                        format!(
                            "write one of {} (or its 0-based index)",
                            choices
                                .iter()
                                .map(|c| format!("{c:?}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                }
            }
            "int_greedy" => {
                if let Ok(n) = answer.trim().parse::<i64>() {
                    case.insert("answer".into(), Value::from(n));
                }
            }
            _ => {}
        }
    }

    /// `data: "path.npy"` (v1 groups) → `{path}`, with the block size the runs' `train:` gave.
    fn data(&mut self, t: &mut Map<String, Value>, path: &str, sizes: &[(u64, String)]) {
        let at = join_key(path, "data");
        if let Some(Value::String(p)) = t.get("data").cloned() {
            let mut m = Map::new();
            m.insert("path".into(), Value::String(p.clone()));
            t.insert("data".into(), Value::Object(m));
            if sizes.is_empty() {
                self.err(
                    &at,
                    "a data path alone has no block size",
                    format!("write `data: {{path: {p}, block_size: 512}}` (tokens per training example)"),
                );
                return;
            }
        }
        let Some((first, first_at)) = sizes.first() else {
            return;
        };
        let Some(Value::Object(data)) = t.get_mut("data") else {
            return;
        };
        let written = data.get("block_size").and_then(as_count);
        let want = written.unwrap_or(*first);
        for (n, where_) in sizes {
            if *n != want {
                self.err(
                    where_,
                    format!(
                        "block size {n} differs from the target's {want}: caramba sets it once per target"
                    ),
                    "write it once as `data.block_size` (a run with another context is another target)",
                );
            }
        }
        if written.is_none() {
            data.insert("block_size".into(), Value::from(*first));
            self.moved(first_at, &join_key(&at, "block_size"));
        }
    }

    /// `verify: {batches: N}` of the runs → the target's `upcycle.verify_batches`.
    fn verify_batches(&mut self, t: &mut Map<String, Value>, path: &str, found: &[(u64, String)]) {
        let Some((first, first_at)) = found.first() else {
            return;
        };
        let upcycle = t.entry("upcycle").or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(upcycle) = upcycle else { return };
        let written = upcycle.get("verify_batches").and_then(as_count);
        let want = written.unwrap_or(*first);
        for (n, at) in found {
            if *n != want {
                self.err(
                    at,
                    format!("{n} verify batches differ from the target's {want}"),
                    "caramba checks every run on the same held-out batches: write the count once, as `upcycle.verify_batches`",
                );
            }
        }
        if written.is_none() {
            upcycle.insert("verify_batches".into(), Value::from(*first));
            self.moved(first_at, &format!("{path}.upcycle.verify_batches"));
        }
    }

    /// `train.teacher_ckpt` of the runs → the target's `teacher`.
    fn teacher(&mut self, t: &mut Map<String, Value>, path: &str, found: &[(String, String)]) {
        let Some((first, first_at)) = found.first() else {
            return;
        };
        let written = t.get("teacher").and_then(Value::as_str).map(String::from);
        let want = written.clone().unwrap_or_else(|| first.clone());
        for (s, at) in found {
            if *s != want {
                self.err(
                    at,
                    format!("teacher `{s}` differs from the target's `{want}`"),
                    "an upcycle has one teacher: write it once, as the target's `teacher:`",
                );
            }
        }
        if written.is_none() {
            t.insert("teacher".into(), Value::String(first.clone()));
            self.moved(first_at, &join_key(path, "teacher"));
        }
    }
}

/// The original's checkpoint names as model sources: `hf://org/name` → `hf:org/name`.
fn teacher_source(s: &str) -> String {
    match s.strip_prefix("hf://") {
        Some(rest) => format!("hf:{rest}"),
        None => s.to_string(),
    }
}
