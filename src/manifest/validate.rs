//! Validation of a typed (not yet lowered) manifest: every problem, each at its manifest path.
//!
//! Validation runs before lowering so that paths are the ones the user wrote (`layers[0]` of a
//! `repeat: 16` block, not its 13th copy); a repeated block is checked once, plus the rule that
//! its output must fit its own input. Width inference follows the data through the topology:
//!
//! - each layer states its own problems and widths ([`LayerSpec`]: `LinearLayer` maps
//!   `d_in → d_out`, `DropoutLayer` is transparent, the others map `d_model → d_model`); the
//!   embedder's `d_model` enters the topology;
//! - consecutive nodes must agree; a residual must preserve width; parallel branches must agree
//!   on input and output; branching branches agree on input and their outputs add up (feature
//!   concatenation); a cyclic loop with `iterations > 1` and any `repeat > 1` must preserve width;
//! - the topology must end at `vocab_size` features, or `d_model` with tied embeddings.
//!
//! Sizes are bounded ([`MAX_DIM`], [`MAX_REPEAT`], [`MAX_NODES`]) so that no later arithmetic
//! can overflow and lowering cannot explode.

use std::collections::HashMap;

use crate::layer::{EmbedderSpec, LayerSpec, Widths};
use crate::manifest::components::DataKind;
use crate::manifest::error::{ManifestError, Problem};
use crate::manifest::load::{Source, join_index, join_key};
use crate::manifest::types::{Manifest, Run, Seeds, Target, TrainerKind};
use crate::model::ModelSpec;
use crate::topology::{NodeSpec, NodeView};
use crate::train::TrainSpec;

/// Largest width, head count or vocabulary accepted (2^24); layers check their own sizes with it.
pub use crate::layer::MAX_DIM;
/// Largest `repeat` / `iterations`.
pub const MAX_REPEAT: usize = 10_000;
/// Largest number of nodes a topology may expand to.
pub const MAX_NODES: usize = 1_000_000;
/// Largest number of seeds in one run's list.
pub const MAX_SEEDS: usize = 1_000;

/// Check `m` (from `src`); all problems at once.
pub fn validate(m: &Manifest, src: &Source) -> Result<(), ManifestError> {
    let mut v = Validator {
        src,
        problems: Vec::new(),
    };
    v.manifest(m);
    if v.problems.is_empty() {
        Ok(())
    } else {
        Err(src.invalid(v.problems))
    }
}

/// A width flowing through the topology and the field that set it.
#[derive(Debug, Clone)]
struct Width {
    d: usize,
    at: String,
}

struct Validator<'a> {
    src: &'a Source,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        let p = self.src.problem(path, message);
        self.problems.push(p);
    }

    fn err_help(&mut self, path: &str, message: impl Into<String>, help: impl Into<String>) {
        let p = self.src.problem(path, message).with_help(help);
        self.problems.push(p);
    }

    fn manifest(&mut self, m: &Manifest) {
        if !(1..=2).contains(&m.version) {
            self.err_help(
                "version",
                format!("unsupported manifest version {}", m.version),
                "use `version: 2`",
            );
        }
        if let Some(name) = &m.name {
            self.dir_name("name", name, "the manifest name");
        }
        self.defaults(m);
        if let Some(model) = &m.model {
            self.model(model, "model");
        }
        if m.targets.is_empty() && m.processes.is_empty() {
            self.err_help(
                "targets",
                "a manifest needs at least one target",
                "add `targets: [{name: quick, data: …, runs: […]}]`",
            );
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        for p in &m.processes {
            let path = join_index("targets", p.index);
            if let Some(first) = names.insert(&p.name, p.index) {
                self.err(
                    &join_key(&path, "name"),
                    format!(
                        "target name `{}` is used twice (also by targets[{first}])",
                        p.name
                    ),
                );
            }
            self.dir_name(&join_key(&path, "name"), &p.name, "a target name");
            for problem in p.problems() {
                let at = join_key(&path, &problem.field);
                match problem.help {
                    Some(help) => self.err_help(&at, problem.message, help),
                    None => self.err(&at, problem.message),
                }
            }
        }
        for (i, t) in m.targets.iter().enumerate() {
            let i = m.written_index(i);
            let path = join_index("targets", i);
            if let Some(first) = names.insert(&t.name, i) {
                self.err(
                    &join_key(&path, "name"),
                    format!(
                        "target name `{}` is used twice (also by targets[{first}])",
                        t.name
                    ),
                );
            }
            self.target(m, t, &path);
        }
        for (key, value) in &m.entrypoints {
            let path = join_key("entrypoints", key);
            let name = strip_kind(value);
            match name {
                Err(kind) => self.err_help(
                    &path,
                    format!("entry point `{key}` names a `{kind}:` target, which is not supported"),
                    "use `target:NAME`, `experiment:NAME`, `process:NAME` or just `NAME`",
                ),
                Ok(name) if !names.contains_key(name) => self.err_help(
                    &path,
                    format!("entry point `{key}` names no target: `{name}`"),
                    format!(
                        "targets: {}",
                        m.targets
                            .iter()
                            .map(|t| t.name.as_str())
                            .chain(m.processes.iter().map(|p| p.name.as_str()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                Ok(name) if names.contains_key(key.as_str()) && name != key => self.err(
                    &path,
                    format!("entry point `{key}` hides the target of the same name (it points to `{name}`)"),
                ),
                Ok(_) => {}
            }
        }
    }

    fn defaults(&mut self, m: &Manifest) {
        let d = &m.defaults;
        if let Some(f) = d.data.val_frac {
            self.val_frac("defaults.data.val_frac", f);
        }
        if let Some(t) = &d.data.tokenizer
            && t.trim().is_empty()
        {
            self.err("defaults.data.tokenizer", "the tokenizer is empty");
        }
        if let Some(dev) = &d.runtime.device {
            self.device("defaults.runtime.device", dev);
        }
        if let Some(dt) = &d.runtime.dtype {
            self.dtype("defaults.runtime.dtype", dt);
        }
        if d.logging.log_every == Some(0) {
            self.err("defaults.logging.log_every", "must be at least 1");
        }
    }

    fn target(&mut self, m: &Manifest, t: &Target, path: &str) {
        self.dir_name(&join_key(path, "name"), &t.name, "a target name");
        match (t.trainer, &t.teacher) {
            (TrainerKind::Upcycle, None) => self.err_help(
                path,
                format!("target `{}` uses `trainer: upcycle` but names no teacher", t.name),
                "add `teacher: smollm2-135m` (or a .gguf path, an HF directory, hf:org/name)",
            ),
            (TrainerKind::Standard | TrainerKind::Orchestrated, Some(_)) => self.err_help(
                &join_key(path, "teacher"),
                "a teacher only applies to `trainer: upcycle`",
                "set `trainer: upcycle`, or remove `teacher:`",
            ),
            _ => {}
        }
        if t.trainer.from_scratch() {
            if t.upcycle.is_some() {
                self.err(&join_key(path, "upcycle"), "only applies to `trainer: upcycle`");
            }
            for (i, r) in t.runs.iter().enumerate() {
                if r.phase.is_some() {
                    self.err(
                        &join_key(&join_index(&join_key(path, "runs"), i), "phase"),
                        "only applies to `trainer: upcycle`",
                    );
                }
            }
        }
        let model = match (&t.model, &m.model) {
            (Some(own), _) => {
                self.model(own, &join_key(path, "model"));
                Some(own)
            }
            (None, Some(top)) => Some(top),
            (None, None) => {
                self.err_help(
                    path,
                    format!("target `{}` has no model", t.name),
                    "add `model:` to the target, or a top-level `model:` shared by all targets",
                );
                None
            }
        };
        // System, objective, metrics and data.
        let data = join_key(path, "data");
        self.components(t, path, model);
        if let Some(d) = t.data.tokens() {
            self.token_data(m, d, &data, model);
        }
        // Runs.
        if t.runs.is_empty() {
            self.err_help(
                &join_key(path, "runs"),
                "a target needs at least one run",
                "add `runs: [{id: train, steps: 100}]`",
            );
        }
        let mut ids: HashMap<String, String> = HashMap::new();
        for (j, run) in t.runs.iter().enumerate() {
            let rpath = join_index(&join_key(path, "runs"), j);
            self.run(m, run, &rpath, t.trainer == TrainerKind::Upcycle);
            self.run_mode(
                run,
                &rpath,
                t.trainer == TrainerKind::Upcycle || t.system.is_classifier(),
                model,
            );
            for id in expanded_ids(run) {
                if let Some(first) = ids.insert(id.clone(), rpath.clone()) {
                    self.err_help(
                        &join_key(&rpath, "id"),
                        format!(
                            "run id `{id}` is used twice in target `{}` (also by {first})",
                            t.name
                        ),
                        "run ids name the run directories; make them unique",
                    );
                }
            }
        }
        for (i, b) in t.benchmarks.iter().enumerate() {
            let bpath = join_index(&join_key(path, "benchmarks"), i);
            for p in b.problems() {
                self.err_help(&join_key(&bpath, &p.field), p.message, p.help);
            }
        }
    }

    /// The target's system against its data, objective, metrics, trainer and model.
    fn components(&mut self, t: &Target, path: &str, model: Option<&ModelSpec>) {
        let sys = t.system;
        let data = join_key(path, "data");
        let kind = match &t.data {
            crate::data::TargetData::Tokens(_) => DataKind::Tokens,
            crate::data::TargetData::Supervised(_) => DataKind::Supervised,
        };
        if kind != sys.data_kind() {
            self.err_help(
                &data,
                format!("system `{sys}` reads `{}` data, but this is `{kind}` data", sys.data_kind()),
                match sys.data_kind() {
                    DataKind::Tokens => "give a token file: `data: {path: data/corpus.npy, block_size: 128}`",
                    DataKind::Supervised => {
                        "give arrays: `data: {type: npy_supervised, features: x.npy, labels: y.npy, n_classes: 10, n_features: 64}`"
                    }
                },
            );
        }
        if let Some(obj) = t.objective
            && !sys.accepts(obj, None)
        {
            self.err_help(
                &join_key(path, "objective"),
                format!("system `{sys}` does not train on `{obj}`"),
                format!("use `objective: {}` (or leave it out)", sys.default_objective()),
            );
        }
        for (i, metric) in t.metrics.iter().flatten().enumerate() {
            if !sys.accepts(sys.default_objective(), Some(*metric)) {
                self.err_help(
                    &join_index(&join_key(path, "metrics"), i),
                    format!("system `{sys}` cannot measure `{metric}`"),
                    format!(
                        "its metrics: {}",
                        sys.default_metrics()
                            .iter()
                            .map(|m| m.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
        if !sys.is_classifier() {
            return;
        }
        if t.trainer != TrainerKind::Standard {
            self.err(
                &join_key(path, "trainer"),
                format!("system `{sys}` trains with `trainer: standard` only"),
            );
        }
        for (i, r) in t.runs.iter().enumerate() {
            let at = join_key(&join_index(&join_key(path, "runs"), i), "train");
            if r.train.clip == crate::train::spec::ClipKind::Adagc {
                self.err_help(
                    &join_key(&at, "clip"),
                    format!("system `{sys}` clips by global norm only"),
                    "remove `clip: adagc` (AdaGC runs in the language-model trainer)",
                );
            }
            if r.train.orchestrator.is_some() {
                self.err_help(
                    &join_key(&at, "orchestrator"),
                    format!("system `{sys}` trains without the orchestrator"),
                    "remove `orchestrator:` (it runs in the language-model trainer)",
                );
            }
        }
        if !t.benchmarks.is_empty() {
            self.err_help(
                &join_key(path, "benchmarks"),
                format!("benchmarks measure language models; system `{sys}` reports its `metrics:` instead"),
                "remove `benchmarks:`",
            );
        }
        let Some(spec) = t.data.supervised() else { return };
        let f = |name: &str| join_key(&data, name);
        if spec.features.trim().is_empty() {
            self.err(&f("features"), "the features path is empty");
        }
        if spec.labels.trim().is_empty() {
            self.err(&f("labels"), "the labels path is empty");
        }
        self.dim(&f("n_classes"), spec.n_classes);
        if let Some(img) = &spec.image {
            let ip = f("image");
            self.dim(&join_key(&ip, "height"), img.height);
            self.dim(&join_key(&ip, "width"), img.width);
            self.dim(&join_key(&ip, "channels"), img.channels);
            if let Some(n) = spec.n_features
                && n != img.pixels()
            {
                self.err_help(
                    &f("n_features"),
                    format!("n_features is {n}, but the image has {} values", img.pixels()),
                    "leave `n_features` out: the image's height · width · channels sets it",
                );
            }
        }
        match spec.width() {
            Some(w) => {
                self.dim(
                    &f(if spec.n_features.is_some() {
                        "n_features"
                    } else {
                        "image"
                    }),
                    w,
                );
            }
            None => self.err_help(
                &data,
                "the feature width is unknown",
                "add `n_features: 64`, or `image: {height: 8, width: 8}` for images",
            ),
        }
        for (name, v) in [("test_frac", spec.test_frac), ("val_frac", spec.val_frac)] {
            if !(0.0..1.0).contains(&v) {
                self.err(&f(name), format!("must be in [0, 1) (got {v})"));
            }
        }
        if spec.test_frac + spec.val_frac >= 1.0 {
            self.err_help(
                &f("test_frac"),
                format!(
                    "test_frac + val_frac is {}, which leaves no rows to train on",
                    spec.test_frac + spec.val_frac
                ),
                "e.g. `test_frac: 0.2, val_frac: 0.1`",
            );
        }
        if spec.test_frac == 0.0 {
            self.err(&f("test_frac"), "a classifier needs a test split (test_frac > 0)");
        }
        if !(spec.feature_scale.is_finite() && spec.feature_scale != 0.0) {
            self.err(
                &f("feature_scale"),
                format!("must be a finite, non-zero number (got {})", spec.feature_scale),
            );
        }
        let Some(model) = model else { return };
        let mpath = if t.model.is_some() {
            join_key(path, "model")
        } else {
            "model".to_string()
        };
        if model.embedder != EmbedderSpec::None {
            self.err_help(
                &join_key(&mpath, "embedder"),
                format!("system `{sys}` feeds feature rows to the topology; it has no token embedder"),
                "use `embedder: {type: none}` (or leave `embedder` out)",
            );
        }
        let Some(width) = spec.width() else { return };
        if let Some(img) = &spec.image {
            for p in crate::layer::patch_embed::image_problems(&model.topology, img) {
                let at = join_key(&join_key(&mpath, "topology"), &p.field);
                match p.help {
                    Some(help) => self.err_help(&at, p.message, help),
                    None => self.err(&at, p.message),
                }
            }
        }
        // why: the model was checked without an input width (it has no embedder); a scratch pass
        // with the data's width finds what only the width can show, and repeats nothing already said.
        let topo = join_key(&mpath, "topology");
        let mut scratch = Validator {
            src: self.src,
            problems: Vec::new(),
        };
        let input = Width {
            d: width,
            at: f(if spec.n_features.is_some() {
                "n_features"
            } else {
                "image"
            }),
        };
        let out = scratch.node(&model.topology, &topo, Some(input));
        for p in scratch.problems {
            if !self
                .problems
                .iter()
                .any(|q| q.path == p.path && q.message == p.message)
            {
                self.problems.push(p);
            }
        }
        if let Some(out) = out
            && out.d != spec.n_classes
        {
            self.err_help(
                &topo,
                format!(
                    "the topology ends with {} features (from `{}`), but the data has {} classes",
                    out.d, out.at, spec.n_classes
                ),
                format!(
                    "end the topology with `{{type: LinearLayer, d_in: {}, d_out: {}}}`",
                    out.d, spec.n_classes
                ),
            );
        }
    }

    fn token_data(&mut self, m: &Manifest, d: &crate::data::DataSpec, data: &str, model: Option<&ModelSpec>) {
        let data = data.to_string();
        if d.path.trim().is_empty() {
            self.err(&join_key(&data, "path"), "the data path is empty");
        }
        if d.block_size == 0 || d.block_size > MAX_DIM {
            self.err(
                &join_key(&data, "block_size"),
                format!("must be in 1..={MAX_DIM}"),
            );
        }
        if let Some(f) = d.val_frac {
            self.val_frac(&join_key(&data, "val_frac"), f);
        }
        let tokenizer = d
            .tokenizer
            .as_deref()
            .or(m.defaults.data.tokenizer.as_deref())
            .unwrap_or("bytes");
        if let Some(tk) = &d.tokenizer
            && tk.trim().is_empty()
        {
            self.err(&join_key(&data, "tokenizer"), "the tokenizer is empty");
        }
        if let (
            Some(ModelSpec {
                embedder: EmbedderSpec::Token { vocab_size, .. },
                ..
            }),
            "bytes",
        ) = (model, tokenizer)
            && *vocab_size < 256
        {
            self.err_help(
                &join_key(&data, "tokenizer"),
                format!(
                    "the `bytes` tokenizer produces ids 0..255, but the model's vocab_size is {vocab_size}"
                ),
                "set the embedder's vocab_size to 256 (or more)",
            );
        }
        if let Some(prep) = &d.prepare
            && prep.input.is_empty()
        {
            self.err_help(
                &join_key(&join_key(&data, "prepare"), "input"),
                "`prepare` needs at least one input glob",
                "e.g. `input: [\"corpus/**/*.txt\"]`",
            );
        }
    }

    /// `mode`, `ckpt`, `generate` and `expected` of a run; `not_lm`: an upcycle or a classifier,
    /// whose runs only train.
    fn run_mode(&mut self, run: &Run, path: &str, not_lm: bool, model: Option<&ModelSpec>) {
        let f = |k: &str| join_key(path, k);
        if let Some(want) = run.expected.get("attn_mode") {
            let want = want.as_str().unwrap_or_default().to_ascii_lowercase();
            if !matches!(want.as_str(), "standard" | "gqa" | "decoupled") {
                self.err_help(
                    &f("expected.attn_mode"),
                    format!("unknown attention mode `{want}`"),
                    "use standard, gqa or decoupled",
                );
            } else if let Some(model) = model {
                let modes: Vec<&str> = model
                    .topology
                    .attention_specs()
                    .iter()
                    .map(|a| match a.mode {
                        crate::layer::AttentionMode::Standard => "standard",
                        crate::layer::AttentionMode::Gqa => "gqa",
                        crate::layer::AttentionMode::Decoupled(_) => "decoupled",
                    })
                    .collect();
                if let Some(other) = modes.iter().find(|m| **m != want) {
                    self.err_help(
                        &f("expected.attn_mode"),
                        format!(
                            "the run expects `attn_mode: {want}`, but the model has `mode: {other}` attention"
                        ),
                        "fix the model's AttentionLayer `mode:`, or the expectation",
                    );
                } else if modes.is_empty() {
                    self.err(
                        &f("expected.attn_mode"),
                        format!("the run expects `attn_mode: {want}`, but the model has no attention layer"),
                    );
                }
            }
        }
        if let Some(k) = run.expected.keys().find(|k| *k != "attn_mode") {
            self.err_help(
                &f(&format!("expected.{k}")),
                format!("`expected.{k}` is not something caramba checks"),
                "`expected:` takes `attn_mode` (standard, gqa, decoupled)",
            );
        }
        if run.mode.is_train() {
            for (key, set) in [("ckpt", run.ckpt.is_some()), ("generate", run.generate.is_some())] {
                if set {
                    self.err_help(
                        &f(key),
                        format!("`{key}` only applies to `mode: sample` or `mode: chat`"),
                        format!("remove `{key}:`, or set the run's `mode:`"),
                    );
                }
            }
            return;
        }
        if not_lm {
            self.err_help(
                &f("mode"),
                format!("`mode: {}` runs belong to a standard language-model target", run.mode),
                "sample the student after the upcycle with `caramba generate --model runs/<name>/<target>/<run>`",
            );
        }
        // why: `verify:` outside an upcycle is already reported by `run`.
        for (key, set) in [
            ("verify", not_lm && run.verify.is_some()),
            ("phase", run.phase.is_some()),
            ("seed", matches!(run.seed, Some(Seeds::Many(_)))),
        ] {
            if set {
                self.err_help(
                    &f(key),
                    format!("`{key}` does not apply to `mode: {}`", run.mode),
                    format!("remove `{key}:`"),
                );
            }
        }
        if let Some(g) = &run.generate {
            let gf = |k: &str| join_key(&f("generate"), k);
            if g.max_new_tokens == 0 {
                self.err(&gf("max_new_tokens"), "must be at least 1");
            }
            if !(g.temperature.is_finite() && g.temperature >= 0.0) {
                self.err_help(
                    &gf("temperature"),
                    format!("must be finite and ≥ 0 (got {})", g.temperature),
                    "0 is greedy",
                );
            }
            if g.top_k == Some(0) {
                self.err(&gf("top_k"), "must be at least 1");
            }
            if let Some(p) = g.top_p
                && !(p > 0.0 && p <= 1.0)
            {
                self.err(&gf("top_p"), format!("must be in (0, 1] (got {p})"));
            }
            if !(g.repetition_penalty.is_finite() && g.repetition_penalty > 0.0) {
                self.err_help(
                    &gf("repetition_penalty"),
                    format!("must be > 0 (got {})", g.repetition_penalty),
                    "1.0 is off",
                );
            }
            if let Some(k) = &g.cache_kind
                && k != "auto"
                && k.parse::<crate::cache::CacheKind>().is_err()
            {
                self.err_help(
                    &gf("cache_kind"),
                    format!("unknown cache kind `{k}`"),
                    "fp32, fp16, bf16, q8_0 (q8), q4_0 (q4), nf4 or auto",
                );
            }
            if g.cache_budget_mb.is_some() && g.cache_kind.as_deref() != Some("auto") {
                self.err_help(
                    &gf("cache_budget_mb"),
                    "a cache budget only applies to `cache_kind: auto`",
                    "add `cache_kind: auto`, or remove the budget",
                );
            }
        }
    }

    fn run(&mut self, m: &Manifest, run: &Run, path: &str, upcycle: bool) {
        self.dir_name(&join_key(path, "id"), &run.id, "a run id");
        let steps = join_key(path, "steps");
        if run.steps == 0 && run.mode.is_train() {
            // why: `steps` has a default (sampling runs take none), so serde no longer says it is
            // missing; a training run without it gets the message it always had.
            if self.src.spans.contains(&steps) || self.src.spans.is_empty() {
                self.err(&steps, "must be at least 1");
            } else {
                self.err_help(
                    path,
                    "missing field `steps`",
                    "a training run needs `steps: N` (optimizer steps)",
                );
            }
        }
        if let Some(Seeds::Many(seeds)) = &run.seed {
            if seeds.is_empty() {
                self.err(&join_key(path, "seed"), "the seed list is empty");
            } else if seeds.len() > MAX_SEEDS {
                self.err(
                    &join_key(path, "seed"),
                    format!("at most {MAX_SEEDS} seeds per run"),
                );
            }
        }
        match (&run.verify, upcycle) {
            (Some(_), false) => self.err_help(
                &join_key(path, "verify"),
                "`verify` only applies to `trainer: upcycle` (a student checked against its teacher)",
                "remove the `verify:` block",
            ),
            (Some(v), true) => {
                if let Err(e) = crate::upcycle::spec::parse_verify(v) {
                    self.err_help(
                        &e.under(&join_key(path, "verify")),
                        e.message,
                        "checks: {type: compare, attention: {max_mean_l1, max_max_l1}, logits: {…}, fail_fast}, \
                         {type: fidelity, max_ppl_ratio, max_delta_nll}, {type: kvcache, min_reduction}, \
                         {type: eval, cases: [{kind: int_greedy|choice_logprob|exact_match_greedy, id, prompt, \
                         choices?, answer}], max_new_tokens, chat, thresholds: {min_student_accuracy, max_accuracy_drop}}",
                    );
                }
            }
            (None, _) => {}
        }
        // why: the blockwise phase runs its own loop (one attention layer at a time) that clips by
        // global norm and has no orchestrator; the global phase trains through the trainer.
        if upcycle && run.phase == Some(crate::upcycle::Phase::Blockwise) {
            let at = join_key(path, "train");
            if run.train.clip == crate::train::spec::ClipKind::Adagc {
                self.err_help(
                    &join_key(&at, "clip"),
                    "the blockwise phase clips by global norm only",
                    "remove `clip: adagc` here; the global phase takes it",
                );
            }
            if run.train.orchestrator.is_some() {
                self.err_help(
                    &join_key(&at, "orchestrator"),
                    "the blockwise phase trains without the orchestrator",
                    "remove `orchestrator:` here; the global phase takes it",
                );
            }
        }
        if run.mode.is_train() {
            self.train(m, &run.train, run.steps, &join_key(path, "train"));
        }
    }

    fn train(&mut self, m: &Manifest, t: &TrainSpec, steps: usize, path: &str) {
        let f = |name: &str| join_key(path, name);
        if t.batch_size == 0 {
            self.err(&f("batch_size"), "must be at least 1");
        }
        if t.grad_accum == 0 {
            self.err(&f("grad_accum"), "must be at least 1");
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            self.err(&f("lr"), format!("must be a positive number (got {})", t.lr));
        }
        for (i, b) in t.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                self.err(
                    &join_index(&f("betas"), i),
                    format!("must be in [0, 1) (got {b})"),
                );
            }
        }
        if !(t.eps.is_finite() && t.eps > 0.0) {
            self.err(&f("eps"), format!("must be a positive number (got {})", t.eps));
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            self.err(
                &f("weight_decay"),
                format!("must be ≥ 0 (got {})", t.weight_decay),
            );
        }
        if !(0.0..1.0).contains(&t.momentum) {
            self.err(&f("momentum"), format!("must be in [0, 1) (got {})", t.momentum));
        }
        if t.warmup_steps > steps {
            self.err(
                &f("warmup_steps"),
                format!(
                    "warmup_steps ({}) exceeds the run's steps ({steps})",
                    t.warmup_steps
                ),
            );
        }
        if !(0.0..=1.0).contains(&t.min_lr_ratio) {
            self.err(
                &f("min_lr_ratio"),
                format!("must be in [0, 1] (got {})", t.min_lr_ratio),
            );
        }
        if !(t.grad_clip.is_finite() && t.grad_clip >= 0.0) {
            self.err_help(
                &f("grad_clip"),
                format!("must be ≥ 0 (got {})", t.grad_clip),
                "0 disables clipping",
            );
        }
        self.optimizer_blocks(t, path);
        if t.eval_every > 0 && t.eval_iters == 0 {
            self.err_help(
                &f("eval_iters"),
                "must be at least 1 when eval_every > 0",
                "set `eval_every: 0` to disable eval",
            );
        }
        if t.log_every == 0 && m.defaults.logging.log_every != Some(0) {
            self.err(&f("log_every"), "must be at least 1");
        }
        if let Some(o) = &t.orchestrator {
            let at = f("orchestrator");
            for (field, reason) in o.problems() {
                self.err(&join_key(&at, field), reason);
            }
        }
        // Inherited values were already checked under `defaults`.
        if m.defaults.runtime.device.as_deref() != Some(t.device.as_str()) {
            self.device(&f("device"), &t.device);
        }
        if m.defaults.runtime.dtype.as_deref() != Some(t.dtype.as_str()) {
            self.dtype(&f("dtype"), &t.dtype);
        }
    }

    /// The `pid:`, `swats:` and `adagc:` blocks of `train:` (checked whichever optimizer runs).
    fn optimizer_blocks(&mut self, t: &TrainSpec, path: &str) {
        let f = |block: &str, name: &str| join_key(&join_key(path, block), name);
        for (name, v) in [("kp", t.pid.kp), ("ki", t.pid.ki), ("kd", t.pid.kd)] {
            if !v.is_finite() {
                self.err(&f("pid", name), format!("must be a finite number (got {v})"));
            }
        }
        if !(t.pid.integral_clip.is_finite() && t.pid.integral_clip > 0.0) {
            self.err(
                &f("pid", "integral_clip"),
                format!("must be a positive number (got {})", t.pid.integral_clip),
            );
        }
        if !(0.0..1.0).contains(&t.pid.derivative_ema) {
            self.err(
                &f("pid", "derivative_ema"),
                format!("must be in [0, 1) (got {})", t.pid.derivative_ema),
            );
        }
        if !(t.swats.tolerance.is_finite() && t.swats.tolerance > 0.0) {
            self.err(
                &f("swats", "tolerance"),
                format!("must be a positive number (got {})", t.swats.tolerance),
            );
        }
        if !(0.0..1.0).contains(&t.adagc.beta) {
            self.err(
                &f("adagc", "beta"),
                format!("must be in [0, 1) (got {})", t.adagc.beta),
            );
        }
        if !(t.adagc.lambda.is_finite() && t.adagc.lambda > 0.0) {
            self.err_help(
                &f("adagc", "lambda"),
                format!("must be a positive number (got {})", t.adagc.lambda),
                "a tensor's gradient norm may reach lambda × its EMA (default 1.05)",
            );
        }
    }

    fn model(&mut self, model: &ModelSpec, path: &str) {
        let emb = join_key(path, "embedder");
        let input = match &model.embedder {
            EmbedderSpec::Token { vocab_size, d_model } => {
                self.dim(&join_key(&emb, "vocab_size"), *vocab_size);
                self.dim(&join_key(&emb, "d_model"), *d_model);
                Some(Width {
                    d: *d_model,
                    at: join_key(&emb, "d_model"),
                })
            }
            EmbedderSpec::None => None,
        };
        let topo = join_key(path, "topology");
        let nodes = expanded_nodes(&model.topology);
        if nodes > MAX_NODES {
            self.err_help(
                &topo,
                format!("the topology expands to {nodes} nodes (at most {MAX_NODES})"),
                "check the `repeat:` counts",
            );
        }
        let out = self.node(&model.topology, &topo, input);
        if let (EmbedderSpec::Token { vocab_size, d_model }, Some(out)) = (&model.embedder, out) {
            let ok = out.d == *vocab_size || (model.tied_embeddings && out.d == *d_model);
            if !ok {
                let head = if model.tied_embeddings {
                    format!("vocab_size ({vocab_size}) or, with tied embeddings, d_model ({d_model})")
                } else {
                    format!("vocab_size ({vocab_size})")
                };
                let help = if !model.tied_embeddings && out.d == *d_model {
                    format!(
                        "set `tied_embeddings: true`, or end the topology with \
                         `{{type: LinearLayer, d_in: {d_model}, d_out: {vocab_size}, bias: false}}`"
                    )
                } else {
                    format!(
                        "end the topology with `{{type: LinearLayer, d_in: {}, d_out: {vocab_size}}}`",
                        out.d
                    )
                };
                self.err_help(
                    &topo,
                    format!(
                        "the topology ends with {} features (from `{}`), but the output head needs {head}",
                        out.d, out.at
                    ),
                    help,
                );
            }
        }
    }

    /// Check `node` at `path` fed with `input`; returns the width it produces (when known).
    fn node(&mut self, node: &NodeSpec, path: &str, input: Option<Width>) -> Option<Width> {
        let field = |f: &str| join_key(path, f);
        match node.view() {
            NodeView::Layer(layer) => self.layer(layer, path, input),
            NodeView::Parallel(p) => {
                self.topology_shape(path, &p.layers, p.repeat);
                let outs = self.branches(path, &p.layers, input.clone());
                let mut first: Option<(usize, Width)> = None;
                for (i, out) in outs.into_iter().enumerate() {
                    let Some(out) = out else { continue };
                    match &first {
                        None => first = Some((i, out)),
                        Some((j, w)) if w.d != out.d => self.err_help(
                            &join_index(&field("layers"), i),
                            format!("parallel branches must produce the same width: layers[{j}] gives {}, layers[{i}] gives {}", w.d, out.d),
                            "the branch outputs are summed (or averaged) element-wise",
                        ),
                        Some(_) => {}
                    }
                }
                first.map(|(_, w)| w).or(input)
            }
            NodeView::Branching(t) => {
                self.topology_shape(path, &t.layers, t.repeat);
                // Features are concatenated: the output width is the sum over branches (and copies).
                let outs = self.branches(path, &t.layers, input);
                let mut total = 0usize;
                for out in &outs {
                    total = total.saturating_add(out.as_ref()?.d);
                }
                Some(Width {
                    d: total.saturating_mul(t.repeat.max(1)),
                    at: path.to_string(),
                })
            }
            NodeView::Cyclic(c) => {
                self.topology_shape(path, &c.layers, c.repeat);
                if c.iterations == 0 || c.iterations > MAX_REPEAT {
                    self.err(&field("iterations"), format!("must be in 1..={MAX_REPEAT}"));
                }
                let out = self.sequence(path, &c.layers, c.repeat, input.clone());
                if c.iterations > 1 {
                    self.preserves(path, &c.layers, input, out.clone(), "iterations", |i, o| {
                        format!("`iterations: {}` feeds the output ({o}) back as the input ({i}), so the layers must preserve the width", c.iterations)
                    });
                }
                out
            }
            NodeView::Residual(t) => {
                self.topology_shape(path, &t.layers, t.repeat);
                let out = self.sequence(path, &t.layers, t.repeat, input.clone());
                let ok = self.preserves(path, &t.layers, input.clone(), out.clone(), "", |i, o| {
                    format!("a residual adds its input to its output, so its layers must preserve the width: {i} in, {o} out")
                });
                if ok { input.or(out) } else { input }
            }
            NodeView::Stacked(t) | NodeView::Sequential(t) | NodeView::Nested(t) | NodeView::Recurrent(t) => {
                self.topology_shape(path, &t.layers, t.repeat);
                self.sequence(path, &t.layers, t.repeat, input)
            }
        }
    }

    /// A layer: its own problems at its fields, then the widths it expects and produces (a layer
    /// without widths, like dropout, passes the arriving width on).
    fn layer(&mut self, layer: &dyn LayerSpec, path: &str, input: Option<Width>) -> Option<Width> {
        for p in layer.problems() {
            let at = join_key(path, &p.field);
            match p.help {
                Some(help) => self.err_help(&at, p.message, help),
                None => self.err(&at, p.message),
            }
        }
        let Some(Widths {
            d_in: (name, d_in),
            d_out: (out_name, d_out),
        }) = layer.widths()
        else {
            return input;
        };
        let w = self.layer_width(path, name, d_in, d_out, input);
        if out_name == name {
            return w;
        }
        w.map(|mut w| {
            w.at = join_key(path, out_name);
            w
        })
    }

    /// A leaf that expects `d_in` (its field `name`) and produces `d_out`. A width-preserving
    /// layer that disagrees passes the arriving width on, so one typo gives one error.
    fn layer_width(
        &mut self,
        path: &str,
        name: &str,
        d_in: usize,
        d_out: usize,
        input: Option<Width>,
    ) -> Option<Width> {
        if let Some(w) = input
            && w.d != d_in
        {
            self.err_help(
                &join_key(path, name),
                format!(
                    "expected {name} = {} (the width arriving from `{}`), got {name} = {d_in}",
                    w.d, w.at
                ),
                "consecutive nodes must agree: each node's input width is the previous node's output width",
            );
            if d_in == d_out {
                return Some(w);
            }
        }
        Some(Width {
            d: d_out,
            at: join_key(path, name),
        })
    }

    /// Children in order, `repeat` times (checked once, plus the repeat rule).
    fn sequence(
        &mut self,
        path: &str,
        layers: &[NodeSpec],
        repeat: usize,
        input: Option<Width>,
    ) -> Option<Width> {
        let mut w = input.clone();
        for (i, child) in layers.iter().enumerate() {
            w = self.node(child, &join_index(&join_key(path, "layers"), i), w);
        }
        if repeat > 1 {
            self.preserves(path, layers, input, w.clone(), "repeat", |i, o| {
                format!(
                    "`repeat: {repeat}` feeds this block's output ({o}) into its next copy, which expects {i}"
                )
            });
        }
        w
    }

    /// Branches all see `input` (or what the first branch expects, without one).
    fn branches(&mut self, path: &str, layers: &[NodeSpec], input: Option<Width>) -> Vec<Option<Width>> {
        let input = input.or_else(|| {
            layers.first().and_then(expects).map(|d| Width {
                d,
                at: join_index(&join_key(path, "layers"), 0),
            })
        });
        layers
            .iter()
            .enumerate()
            .map(|(i, b)| self.node(b, &join_index(&join_key(path, "layers"), i), input.clone()))
            .collect()
    }

    /// Report (at `path.field`) when a block maps width `i` to a different width `o`.
    fn preserves(
        &mut self,
        path: &str,
        layers: &[NodeSpec],
        input: Option<Width>,
        out: Option<Width>,
        field: &str,
        message: impl Fn(usize, usize) -> String,
    ) -> bool {
        let d_in = input.map(|w| w.d).or_else(|| layers.first().and_then(expects));
        match (d_in, out) {
            (Some(i), Some(o)) if i != o.d => {
                let at = if field.is_empty() {
                    path.to_string()
                } else {
                    join_key(path, field)
                };
                self.err(&at, message(i, o.d));
                false
            }
            _ => true,
        }
    }

    /// Checks shared by every topology: at least one child, a sane repeat.
    fn topology_shape(&mut self, path: &str, layers: &[NodeSpec], repeat: usize) {
        if layers.is_empty() {
            self.err(&join_key(path, "layers"), "a topology needs at least one layer");
        }
        if repeat == 0 || repeat > MAX_REPEAT {
            self.err(
                &join_key(path, "repeat"),
                format!("must be in 1..={MAX_REPEAT} (got {repeat})"),
            );
        }
    }

    fn dim(&mut self, path: &str, v: usize) -> bool {
        if v == 0 || v > MAX_DIM {
            self.err(path, format!("must be in 1..={MAX_DIM} (got {v})"));
            false
        } else {
            true
        }
    }

    fn val_frac(&mut self, path: &str, v: f64) {
        if !(0.0..1.0).contains(&v) {
            self.err_help(
                path,
                format!("must be in [0, 1) (got {v})"),
                "the fraction of tokens held out for eval loss",
            );
        }
    }

    fn device(&mut self, path: &str, dev: &str) {
        let ok = matches!(dev, "cpu" | "cuda" | "metal")
            || dev
                .strip_prefix("cuda:")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            self.err_help(
                path,
                format!("unknown device `{dev}`"),
                "use cpu, cuda, cuda:N or metal",
            );
        }
    }

    fn dtype(&mut self, path: &str, dt: &str) {
        if !matches!(dt, "auto" | "f32" | "bf16" | "f16") {
            self.err_help(
                path,
                format!("unknown dtype `{dt}`"),
                "use auto (bf16 on CUDA, f32 elsewhere), f32, bf16 or f16",
            );
        }
    }

    /// Names that become directory names: `[A-Za-z0-9._-]+`, not starting with a dot.
    fn dir_name(&mut self, path: &str, name: &str, what: &str) {
        let ok = !name.is_empty()
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            self.err_help(
                path,
                format!("{what} must be a simple name, got `{name}`"),
                "use letters, digits, `.`, `_` and `-` (it names a directory), not starting with `.`",
            );
        }
    }
}

/// The width a node expects at its input, when it determines one.
fn expects(node: &NodeSpec) -> Option<usize> {
    match node.view() {
        NodeView::Layer(l) => l.widths().map(|w| w.d_in.1),
        NodeView::Stacked(_)
        | NodeView::Sequential(_)
        | NodeView::Nested(_)
        | NodeView::Residual(_)
        | NodeView::Parallel(_)
        | NodeView::Branching(_)
        | NodeView::Cyclic(_)
        | NodeView::Recurrent(_) => node.children()?.0.iter().find_map(expects),
    }
}

/// Node count after expanding every `repeat` (saturating).
pub fn expanded_nodes(node: &NodeSpec) -> usize {
    match node.children() {
        None => 1,
        Some((children, repeat)) => {
            let inner = children
                .iter()
                .fold(0usize, |acc, c| acc.saturating_add(expanded_nodes(c)));
            inner.saturating_mul(repeat).saturating_add(1)
        }
    }
}

/// `entrypoint value` → target name (`target:x`, `experiment:x`, `process:x`, `x`); `Err(kind)`
/// for other kinds.
pub fn strip_kind(s: &str) -> Result<&str, &str> {
    match s.split_once(':') {
        Some(("target" | "experiment" | "process", name)) => Ok(name),
        Some((kind, _)) => Err(kind),
        None => Ok(s),
    }
}

/// The run ids a run expands to (one per seed of a list).
fn expanded_ids(run: &Run) -> Vec<String> {
    match &run.seed {
        Some(Seeds::Many(seeds)) => seeds.iter().map(|s| format!("{}__s{s}", run.id)).collect(),
        _ => vec![run.id.clone()],
    }
}
