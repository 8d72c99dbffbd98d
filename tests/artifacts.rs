//! Artifact writers end to end: a report built from fresh random results is written to a temporary
//! directory, then every file is read back — CSVs with the csv crate, report.json with serde, PNGs decoded,
//! LaTeX checked for structure (and compiled when pdflatex or tectonic is on PATH), HTML checked for its
//! tables and embedded figures — and the summary math is recomputed here independently.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use caramba::bench::artifacts::{
    ArtifactError, ArtifactInfo, ArtifactOptions, FigureFormat, escape_latex, write_all, write_all_with,
};
use caramba::bench::{
    AccuracyResult, LatencyResult, MemoryResult, Metadata, PerplexityResult, Report, Stat, Summary,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const PROMPTS: [usize; 4] = [128, 256, 512, 1024];
const GENS: [usize; 2] = [32, 64];
const BATCHES: [usize; 2] = [1, 4];
const CACHES: [&str; 2] = ["fp16", "q8_0"];
const SEQS: [usize; 4] = [512, 1024, 2048, 4096];

fn fresh_rng() -> ChaCha8Rng {
    let seed: u64 = rand::random();
    println!("seed = {seed}");
    ChaCha8Rng::seed_from_u64(seed)
}

fn stat(rng: &mut ChaCha8Rng, center: f64, runs: usize) -> Stat {
    let samples: Vec<f64> = (0..runs).map(|_| center * rng.random_range(0.85..1.15)).collect();
    Stat::from_samples(&samples).expect("finite samples")
}

/// A teacher/student report with every result drawn at random (names as given).
fn random_report(rng: &mut ChaCha8Rng, teacher: &str, student: &str) -> Report {
    let models = [teacher, student];
    let mut report = Report {
        metadata: Metadata {
            name: "dba_upcycle & 50% #1 {x}_y".into(),
            manifest: "presets/llama_dba.yml".into(),
            target: "paper".into(),
            git_revision: Some(format!("{:040x}", rng.random::<u128>())),
            device: "cpu".into(),
            dtype: "f32".into(),
            build_flags: vec!["dev".into()],
            versions: BTreeMap::from([
                ("caramba".into(), "0.1.0".into()),
                ("candle".into(), "0.11".into()),
            ]),
            created_at: "2025-01-31T12:00:00Z".into(),
        },
        perplexity: Vec::new(),
        latency: Vec::new(),
        memory: Vec::new(),
        accuracy: Vec::new(),
        verify: serde_json::json!({"logit_kl": rng.random_range(0.0..0.1), "passed": true}),
    };
    for model in models {
        let nll: f64 = rng.random_range(1.5..4.0);
        report.perplexity.push(PerplexityResult {
            model: model.into(),
            set: "in_domain".into(),
            source: None,
            perplexity: nll.exp(),
            nll,
            tokens: rng.random_range(1000..100_000),
            block_size: 256,
            cache_kind: "none".into(),
        });
        let speed: f64 = rng.random_range(20.0..400.0);
        for cache in CACHES {
            for batch in BATCHES {
                for prompt in PROMPTS {
                    for gen_len in GENS {
                        let runs = rng.random_range(3..8);
                        let tps = speed * batch as f64 * (1.0 - prompt as f64 / 4096.0);
                        report.latency.push(LatencyResult {
                            model: model.into(),
                            prompt_len: prompt,
                            gen_len,
                            batch_size: batch,
                            cache_kind: cache.into(),
                            prefill_ms: stat(rng, prompt as f64 * 0.3, runs),
                            ttft_ms: stat(rng, prompt as f64 * 0.35, runs),
                            decode_tokens_per_sec: stat(rng, tps, runs),
                            runs,
                        });
                    }
                }
            }
        }
        let per_token: u64 = rng.random_range(2_000..40_000);
        for (i, cache) in CACHES.iter().enumerate() {
            for batch in [1usize, 2] {
                for seq in SEQS {
                    let measured = rng.random_bool(0.5);
                    report.memory.push(MemoryResult {
                        model: model.into(),
                        seq_len: seq,
                        batch_size: batch,
                        cache_kind: (*cache).into(),
                        kv_bytes: per_token / (i as u64 + 1) * (seq * batch) as u64,
                        peak_bytes: measured.then(|| rng.random_range(1u64 << 28..1u64 << 32)),
                        peak_unavailable: (!measured).then(|| "CPU: no allocator statistics".into()),
                        model_bytes: rng.random_range(1u64 << 26..1u64 << 30),
                    });
                }
            }
        }
        report.accuracy.push(AccuracyResult {
            model: model.into(),
            task: "arc_easy".into(),
            metric: "accuracy".into(),
            value: rng.random_range(0.2..0.8),
            examples: 500,
            num_fewshot: 0,
        });
    }
    report
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

fn read_csv(dir: &Path, name: &str) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let mut reader = csv::Reader::from_path(dir.join(name)).expect("csv opens");
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|r| {
            let r = r.expect("record");
            header.iter().cloned().zip(r.iter().map(str::to_owned)).collect()
        })
        .collect();
    (header, rows)
}

fn f(row: &BTreeMap<String, String>, key: &str) -> f64 {
    row[key]
        .parse()
        .unwrap_or_else(|_| panic!("{key} = {:?} is a number", row[key]))
}

fn u(row: &BTreeMap<String, String>, key: &str) -> u64 {
    row[key]
        .parse()
        .unwrap_or_else(|_| panic!("{key} = {:?} is an integer", row[key]))
}

#[test]
fn every_artifact_is_written_and_reads_back() {
    let mut rng = fresh_rng();
    let report = random_report(&mut rng, "teacher", "student");
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("artifacts/run");
    let written = write_all(&report, &dir).expect("artifacts written");

    // The file list: every file exists, report.json last, no temporary file left behind.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).expect("report.json")).expect("json");
    let info: ArtifactInfo = serde_json::from_value(json["artifacts"].clone()).expect("artifacts section");
    let ext = info.figure_format.extension();
    let expected = [
        "perplexity.csv".to_owned(),
        "latency.csv".into(),
        "memory.csv".into(),
        "accuracy.csv".into(),
        "tables.tex".into(),
        format!("summary.{ext}"),
        format!("latency_vs_context.{ext}"),
        format!("memory_scaling.{ext}"),
        "report.html".into(),
        "report.json".into(),
    ];
    assert_eq!(info.files, expected);
    assert_eq!(written, expected.iter().map(|n| dir.join(n)).collect::<Vec<_>>());
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut sorted = expected.to_vec();
    sorted.sort();
    assert_eq!(on_disk, sorted, "exactly the listed files, no temporaries");
    match info.figure_format {
        FigureFormat::Png => assert!(info.font.is_some() && info.figure_note.is_none()),
        FigureFormat::Svg => assert!(info.font.is_none() && info.figure_note.is_some()),
    }

    // report.json: the report round-trips, and the stored summary is the computed one.
    let back: Report = serde_json::from_value(json.clone()).expect("report.json parses as a Report");
    assert!(
        back == report,
        "report.json reads back as the report that was written"
    );
    let summary: Summary = serde_json::from_value(json["summary"].clone()).expect("summary parses");
    assert_eq!(summary, report.summary());

    // CSVs: same rows, same values, in the report's order.
    let (header, rows) = read_csv(&dir, "perplexity.csv");
    assert_eq!(
        header,
        [
            "model",
            "set",
            "cache_kind",
            "block_size",
            "tokens",
            "nll",
            "perplexity"
        ]
    );
    assert_eq!(rows.len(), report.perplexity.len());
    for (row, r) in rows.iter().zip(&report.perplexity) {
        assert_eq!((&row["model"], &row["cache_kind"]), (&r.model, &r.cache_kind));
        assert_eq!(&row["set"], &r.set);
        assert_eq!(
            (u(row, "block_size"), u(row, "tokens")),
            (r.block_size as u64, r.tokens)
        );
        assert_eq!((f(row, "nll"), f(row, "perplexity")), (r.nll, r.perplexity));
    }
    let (header, rows) = read_csv(&dir, "latency.csv");
    assert_eq!(header.len(), 15);
    assert_eq!(rows.len(), report.latency.len());
    for (row, r) in rows.iter().zip(&report.latency) {
        assert_eq!((&row["model"], &row["cache_kind"]), (&r.model, &r.cache_kind));
        let dims = [
            u(row, "prompt_len"),
            u(row, "gen_len"),
            u(row, "batch_size"),
            u(row, "runs"),
        ];
        assert_eq!(
            dims,
            [r.prompt_len, r.gen_len, r.batch_size, r.runs].map(|x| x as u64)
        );
        for (name, s) in [
            ("prefill_ms", r.prefill_ms),
            ("ttft_ms", r.ttft_ms),
            ("decode_tokens_per_sec", r.decode_tokens_per_sec),
        ] {
            let read = [
                f(row, &format!("{name}_median")),
                f(row, &format!("{name}_min")),
                f(row, &format!("{name}_max")),
            ];
            assert_eq!(read, [s.median, s.min, s.max], "{name}");
        }
    }
    let (header, rows) = read_csv(&dir, "memory.csv");
    assert!(header.contains(&"cache_kind".to_owned()) && header.contains(&"kv_bytes_per_token".to_owned()));
    assert_eq!(rows.len(), report.memory.len());
    for (row, r) in rows.iter().zip(&report.memory) {
        assert_eq!((&row["model"], &row["cache_kind"]), (&r.model, &r.cache_kind));
        assert_eq!(
            [u(row, "seq_len"), u(row, "batch_size")],
            [r.seq_len as u64, r.batch_size as u64]
        );
        assert_eq!(
            (u(row, "kv_bytes"), u(row, "model_bytes")),
            (r.kv_bytes, r.model_bytes)
        );
        assert_eq!(f(row, "kv_mib"), r.kv_bytes as f64 / 1048576.0);
        assert_eq!(
            f(row, "kv_bytes_per_token"),
            r.kv_bytes as f64 / (r.seq_len * r.batch_size) as f64
        );
        match r.peak_bytes {
            Some(p) => assert_eq!((u(row, "peak_bytes"), row["peak_unavailable"].as_str()), (p, "")),
            None => {
                assert_eq!(row["peak_bytes"], "");
                assert_eq!(
                    Some(row["peak_unavailable"].as_str()),
                    r.peak_unavailable.as_deref()
                );
            }
        }
    }
    let (_, rows) = read_csv(&dir, "accuracy.csv");
    assert_eq!(rows.len(), report.accuracy.len());
    assert_eq!(f(&rows[1], "value"), report.accuracy[1].value);

    // Figures: PNG signature, decodable, the canvas size, and real content (not a blank page).
    for stem in ["summary", "latency_vs_context", "memory_scaling"] {
        let bytes = std::fs::read(dir.join(format!("{stem}.{ext}"))).expect("figure");
        match info.figure_format {
            FigureFormat::Png => check_png(&bytes, stem),
            FigureFormat::Svg => check_svg(&bytes, stem),
        }
    }

    // LaTeX: structure, escaping, the three rows with the summary's numbers.
    let tex = std::fs::read_to_string(dir.join("tables.tex")).expect("tables.tex");
    check_latex(&tex, &report);
    compile_latex_if_possible(&tex, tmp.path());

    // HTML: tables and figures embedded byte for byte.
    let html = std::fs::read_to_string(dir.join("report.html")).expect("report.html");
    for id in [
        "metadata",
        "summary",
        "perplexity",
        "latency",
        "memory",
        "accuracy",
    ] {
        assert!(html.contains(&format!("<table id=\"{id}\">")), "table {id}");
    }
    assert!(html.contains("dba_upcycle &amp; 50% #1 {x}_y"), "escaped name");
    assert!(html.contains("<pre id=\"verify\">"));
    for stem in ["summary", "latency_vs_context", "memory_scaling"] {
        let marker = format!("<figure id=\"fig-{stem}\"><img alt=");
        let at = html
            .find(&marker)
            .unwrap_or_else(|| panic!("figure {stem} embedded"));
        let prefix = format!("data:{};base64,", info.figure_format.mime());
        let start = at + html[at..].find(&prefix).expect("data URI") + prefix.len();
        let end = start + html[start..].find('"').expect("end of URI");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&html[start..end])
            .expect("base64");
        assert_eq!(
            decoded,
            std::fs::read(dir.join(format!("{stem}.{ext}"))).expect("figure"),
            "{stem}"
        );
    }
    assert!(!html.contains("src=\"summary."), "no external references");
}

fn check_png(bytes: &[u8], stem: &str) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{stem}: PNG signature");
    assert!(
        bytes.len() > 10_000,
        "{stem}: {} bytes is too small for a chart",
        bytes.len()
    );
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("PNG header");
    let mut pixels = vec![0u8; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).expect("PNG decodes");
    assert!(
        frame.width >= 800 && frame.height >= 500,
        "{stem}: {}x{}",
        frame.width,
        frame.height
    );
    let rgb = &pixels[..frame.buffer_size()];
    let non_white = rgb.chunks(3).filter(|p| p != &[255, 255, 255]).count();
    let share = non_white as f64 / (frame.width * frame.height) as f64;
    assert!(
        share > 0.02 && share < 0.6,
        "{stem}: {share:.3} of the pixels are drawn"
    );
    let colored = rgb
        .chunks(3)
        .filter(|p| p[0].abs_diff(p[1]) > 60 || p[1].abs_diff(p[2]) > 60)
        .count();
    assert!(
        colored > 500,
        "{stem}: the data series are drawn in colour ({colored} pixels)"
    );
}

fn check_svg(bytes: &[u8], stem: &str) {
    let svg = std::str::from_utf8(bytes).expect("SVG is UTF-8");
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{stem}: an SVG document"
    );
    assert!(
        svg.matches("<text").count() >= 10,
        "{stem}: titles, ticks and legend are text"
    );
    assert!(
        svg.contains("<polyline") || svg.contains("<rect"),
        "{stem}: data drawn"
    );
}

fn check_latex(tex: &str, report: &Report) {
    let s = report.summary();
    for env in ["table", "tabular"] {
        let begins = tex.matches(&format!("\\begin{{{env}}}")).count();
        assert_eq!(begins, 1, "one {env}");
        assert_eq!(
            begins,
            tex.matches(&format!("\\end{{{env}}}")).count(),
            "{env} balanced"
        );
    }
    let unescaped = tex.replace("\\{", "").replace("\\}", "");
    assert_eq!(
        unescaped.matches('{').count(),
        unescaped.matches('}').count(),
        "braces balanced"
    );
    let rules: Vec<usize> = ["\\toprule", "\\midrule", "\\bottomrule"]
        .iter()
        .map(|r| tex.find(r).expect(r))
        .collect();
    assert!(rules.windows(2).all(|w| w[0] < w[1]), "booktabs rules in order");
    assert!(tex.contains(&escape_latex(&report.metadata.name)));
    assert!(tex.contains(r"dba\_upcycle \& 50\% \#1 \{x\}\_y"));
    assert!(tex.contains(r"\textbf{Teacher} & \textbf{Student} & \textbf{Change}"));
    let body = &tex[rules[1]..rules[2]];
    let rows: Vec<&str> = body.lines().filter(|l| l.ends_with("\\\\")).collect();
    assert_eq!(rows.len(), 3);
    assert!(rows[0].starts_with(r"Perplexity $\downarrow$"));
    assert!(rows[1].starts_with(r"Throughput (tok/s) $\uparrow$"));
    assert!(rows[2].starts_with(r"KV cache (bytes/token) $\downarrow$"));
    let p = s.perplexity.expect("perplexity compared");
    assert!(
        rows[0].contains(&format!("{:.2}$\\times$", p.ratio)),
        "{}",
        rows[0]
    );
    let t = s.throughput.expect("throughput compared");
    assert!(
        rows[1].contains(&format!("{:.2}$\\times$", t.speedup)),
        "{}",
        rows[1]
    );
    let k = s.kv_cache.expect("kv compared");
    assert!(
        rows[2].contains(&format!("{:.2}$\\times$", k.reduction)),
        "{}",
        rows[2]
    );
}

/// Compiles `tables.tex` in a standalone article with pdflatex or tectonic when one is on PATH.
fn compile_latex_if_possible(tex: &str, dir: &Path) {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
    };
    let doc = dir.join("standalone.tex");
    std::fs::write(&doc, "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n\\input{tables.tex}\n\\end{document}\n")
        .expect("standalone document");
    std::fs::write(dir.join("tables.tex"), tex).expect("copy of tables.tex");
    let mut cmd = if on_path("pdflatex") {
        let mut c = std::process::Command::new("pdflatex");
        c.args(["-interaction=nonstopmode", "-halt-on-error", "standalone.tex"]);
        c
    } else if on_path("tectonic") {
        let mut c = std::process::Command::new("tectonic");
        c.arg("standalone.tex");
        c
    } else {
        println!("skipped: neither pdflatex nor tectonic is on PATH; tables.tex was not compiled");
        return;
    };
    let out = cmd.current_dir(dir).output().expect("LaTeX runs");
    assert!(
        out.status.success(),
        "tables.tex does not compile:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(dir.join("standalone.pdf").is_file(), "a PDF was produced");
}

#[test]
fn summary_math_is_recomputed_independently() {
    let mut rng = fresh_rng();
    let report = random_report(&mut rng, "teacher", "student");
    let s = report.summary();
    assert_eq!(
        (s.baseline.as_deref(), s.candidate.as_deref()),
        (Some("teacher"), Some("student"))
    );

    let ppl = |m: &str| {
        report
            .perplexity
            .iter()
            .find(|r| r.model == m)
            .expect("ppl")
            .perplexity
    };
    let p = s.perplexity.clone().expect("perplexity compared");
    assert_eq!((p.block_size, p.cache_kind.as_str()), (256, "none"));
    assert!(close(p.ratio, ppl("student") / ppl("teacher")));

    // Throughput: batch 1, the first cache kind, median over all 8 (prompt, gen) points.
    let tps = |m: &str| {
        median(
            (report.latency.iter())
                .filter(|r| r.model == m && r.batch_size == 1 && r.cache_kind == "fp16")
                .map(|r| r.decode_tokens_per_sec.median)
                .collect(),
        )
    };
    let t = s.throughput.clone().expect("throughput compared");
    assert_eq!(
        (t.batch_size, t.cache_kind.as_str(), t.configs),
        (1, "fp16", PROMPTS.len() * GENS.len())
    );
    assert!(close(t.baseline_tokens_per_sec, tps("teacher")));
    assert!(close(t.speedup, tps("student") / tps("teacher")));

    // KV cache: bytes/token of the first cache kind over every (seq, batch) point.
    let kv = |m: &str| {
        median(
            (report.memory.iter())
                .filter(|r| r.model == m && r.cache_kind == "fp16")
                .map(|r| r.kv_bytes as f64 / (r.seq_len * r.batch_size) as f64)
                .collect(),
        )
    };
    let k = s.kv_cache.clone().expect("kv compared");
    assert_eq!((k.cache_kind.as_str(), k.configs), ("fp16", SEQS.len() * 2));
    assert!(close(k.reduction, kv("teacher") / kv("student")));

    // Roles are found anywhere; without roles the first two models in order are compared.
    let mut reordered = report.clone();
    reordered.perplexity.reverse();
    assert_eq!(reordered.summary().baseline.as_deref(), Some("teacher"));
    let named = random_report(&mut rng, "llama-gqa", "llama-dba");
    let n = named.summary();
    assert_eq!(
        (n.baseline.as_deref(), n.candidate.as_deref()),
        (Some("llama-gqa"), Some("llama-dba"))
    );
    assert!(n.perplexity.is_some() && n.throughput.is_some() && n.kv_cache.is_some());

    // Unmatched configurations are not compared.
    let mut unmatched = report.clone();
    for r in unmatched.latency.iter_mut().filter(|r| r.model == "student") {
        r.cache_kind = "q4_0".into();
    }
    for r in unmatched.perplexity.iter_mut().filter(|r| r.model == "student") {
        r.block_size *= 2;
    }
    let u = unmatched.summary();
    assert!(u.throughput.is_none() && u.perplexity.is_none() && u.kv_cache.is_some());

    // One model: nothing to compare, and the artifacts are still written.
    let mut alone = report.clone();
    alone.perplexity.retain(|r| r.model == "teacher");
    alone.latency.retain(|r| r.model == "teacher");
    alone.memory.retain(|r| r.model == "teacher");
    alone.accuracy.clear();
    let a = alone.summary();
    assert_eq!((a.baseline.as_deref(), a.candidate), (Some("teacher"), None));
    let tmp = tempfile::tempdir().expect("temp dir");
    let files = write_all(&alone, tmp.path()).expect("single-model artifacts");
    let tex = std::fs::read_to_string(tmp.path().join("tables.tex")).expect("tex");
    assert!(
        tex.contains(r"Perplexity $\downarrow$ & -- & -- & -- \\"),
        "{tex}"
    );
    assert_eq!(files.len(), 10);
}

#[test]
fn svg_figures_need_no_font() {
    let mut rng = fresh_rng();
    let report = random_report(&mut rng, "teacher", "student");
    let tmp = tempfile::tempdir().expect("temp dir");
    let options = ArtifactOptions {
        figures: Some(FigureFormat::Svg),
    };
    let written = write_all_with(&report, tmp.path(), &options).expect("SVG artifacts");
    for stem in ["summary", "latency_vs_context", "memory_scaling"] {
        let path = tmp.path().join(format!("{stem}.svg"));
        assert!(written.contains(&path), "{stem}.svg listed");
        check_svg(&std::fs::read(&path).expect("svg"), stem);
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("report.json")).expect("json")).expect("parse");
    assert_eq!(json["artifacts"]["figure_format"], "svg");
    assert_eq!(json["artifacts"]["figure_note"], "SVG requested");
    let html = std::fs::read_to_string(tmp.path().join("report.html")).expect("html");
    assert_eq!(html.matches("data:image/svg+xml;base64,").count(), 3);
}

#[test]
fn non_finite_numbers_are_refused_with_their_path() {
    let mut rng = fresh_rng();
    let mut report = random_report(&mut rng, "teacher", "student");
    report.latency[3].ttft_ms.max = f64::INFINITY;
    report.perplexity[1].perplexity = f64::NAN;
    let tmp = tempfile::tempdir().expect("temp dir");
    match write_all(&report, tmp.path()) {
        Err(ArtifactError::NonFinite { fields }) => {
            assert_eq!(fields, ["perplexity[1].perplexity", "latency[3].ttft_ms.max"]);
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
    assert_eq!(
        std::fs::read_dir(tmp.path()).expect("list").count(),
        0,
        "nothing written"
    );
}

#[test]
fn an_empty_report_still_writes_every_file() {
    let mut rng = fresh_rng();
    let mut report = random_report(&mut rng, "teacher", "student");
    report.perplexity.clear();
    report.latency.clear();
    report.memory.clear();
    report.accuracy.clear();
    report.verify = serde_json::Value::Null;
    let s = report.summary();
    assert_eq!(
        (s.baseline, s.perplexity, s.throughput, s.kv_cache),
        (None, None, None, None)
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let files = write_all(&report, tmp.path()).expect("artifacts of an empty report");
    assert_eq!(files.len(), 10);
    let (header, rows) = read_csv(tmp.path(), "latency.csv");
    assert_eq!((header.len(), rows.len()), (15, 0));
    let html = std::fs::read_to_string(tmp.path().join("report.html")).expect("html");
    assert!(!html.contains("<pre id=\"verify\">") && !html.contains("<table id=\"accuracy\">"));
}

#[test]
fn two_text_sets_are_compared_side_by_side_in_every_summary_table() {
    let mut rng = fresh_rng();
    let mut report = random_report(&mut rng, "teacher", "student");
    // Verification's in-domain rows at another configuration, then the benchmark's two sets.
    let row = |model: &str, set: &str, cache: &str, perplexity: f64| PerplexityResult {
        model: model.into(),
        set: set.into(),
        source: None,
        perplexity,
        nll: perplexity.ln(),
        tokens: 1000,
        block_size: 512,
        cache_kind: cache.into(),
    };
    report.perplexity = vec![
        row("teacher", "in_domain", "none (full forward)", 9.0),
        row("student", "in_domain", "none (full forward)", 9.9),
        row("teacher", "in_domain", "none", 10.0),
        row("student", "in_domain", "none", 10.5),
        row("teacher", "out_of_domain", "none", 20.0),
        row("student", "out_of_domain", "none", 24.0),
    ];
    let s = report.summary();
    let kv = s.kv_cache.clone().expect("kv compared");
    let sets: Vec<(String, String, f64, f64, f64)> = s
        .perplexity_sets
        .iter()
        .map(|p| {
            (
                p.set.clone(),
                p.cache_kind.clone(),
                p.baseline,
                p.candidate,
                p.ratio,
            )
        })
        .collect();
    assert_eq!(
        sets,
        [
            ("in_domain".into(), "none".into(), 10.0, 10.5, 1.05),
            ("out_of_domain".into(), "none".into(), 20.0, 24.0, 1.2),
        ],
        "both sets at the one configuration they share"
    );
    for p in &s.perplexity_sets {
        assert_eq!(p.kv_bytes_ratio, Some(1.0 / kv.reduction));
    }
    // The headline keeps its old rule: the first matched result.
    assert_eq!(s.perplexity.as_ref().map(|p| p.baseline), Some(9.0));

    let tmp = tempfile::tempdir().expect("temp dir");
    write_all(&report, tmp.path()).expect("artifacts");
    let tex = std::fs::read_to_string(tmp.path().join("tables.tex")).expect("tex");
    assert!(
        tex.contains(r"Perplexity, in\_domain $\downarrow$ & 10.00 & 10.50 & 1.05$\times$ \\"),
        "{tex}"
    );
    assert!(
        tex.contains(r"Perplexity, out\_of\_domain $\downarrow$ & 20.00 & 24.00 & 1.20$\times$ \\"),
        "{tex}"
    );
    let html = std::fs::read_to_string(tmp.path().join("report.html")).expect("html");
    assert!(html.contains("Perplexity, in_domain") && html.contains("Perplexity, out_of_domain"));
    let (_, rows) = read_csv(tmp.path(), "perplexity.csv");
    let sets: Vec<&str> = rows.iter().map(|r| r["set"].as_str()).collect();
    assert_eq!(
        sets,
        [
            "in_domain",
            "in_domain",
            "in_domain",
            "in_domain",
            "out_of_domain",
            "out_of_domain"
        ]
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("report.json")).expect("json"))
            .expect("parses");
    assert_eq!(json["summary"]["perplexity_sets"][1]["set"], "out_of_domain");
    assert_eq!(json["summary"]["perplexity_sets"][1]["ratio"], 1.2);
}

#[test]
fn a_report_written_before_text_sets_reads_as_in_domain() {
    let mut rng = fresh_rng();
    let report = random_report(&mut rng, "teacher", "student");
    let mut json = serde_json::to_value(&report).expect("json");
    for row in json["perplexity"].as_array_mut().expect("rows") {
        row.as_object_mut().expect("object").remove("set");
    }
    let back: Report = serde_json::from_value(json).expect("an old report still reads");
    assert!(
        back.perplexity
            .iter()
            .all(|r| r.set == "in_domain" && r.source.is_none())
    );
    assert_eq!(back, report);
}
