//! The agents (process targets): manifests that compile or fail at the right path; each process
//! end to end against a fake OpenAI endpoint whose replies are scripted (malformed JSON, prose,
//! cut-off replies — what small models write), so repair-and-retry, the field fallback, routing,
//! budgets, transcripts and outputs are checked exactly; and against a real `caramba serve` on
//! SmolLM2-135M-Instruct (started by the process itself), skipped with a message when the
//! weights cannot be had.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use caramba::agents::transcript::{EntryKind, read};
use caramba::compiler::{Compiled, compile_str};
use caramba::manifest::Format;
use serde_json::{Value, json};

/// A fake OpenAI endpoint: each `POST …/chat/completions` gets the next scripted reply (an
/// empty one when the script is spent); every request body is kept.
struct Fake {
    url: String,
    requests: Arc<Mutex<Vec<Value>>>,
}

fn fake(replies: &[&str]) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let script: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new(replies.iter().rev().map(|s| s.to_string()).collect()));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let script = script.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                        let lower = h.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    let out = if line.starts_with("GET") {
                        json!({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
                    } else {
                        let req: Value = serde_json::from_slice(&body).unwrap();
                        seen.lock().unwrap().push(req);
                        let reply = script.lock().unwrap().pop().unwrap_or_default();
                        let n = reply.split_whitespace().count();
                        json!({
                            "id": "chatcmpl-fake", "object": "chat.completion", "model": "fake-model",
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": n + 10}
                        })
                    };
                    let text = out.to_string();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        text.len()
                    );
                    if stream
                        .write_all(head.as_bytes())
                        .and_then(|_| stream.write_all(text.as_bytes()))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Fake { url, requests }
}

fn compile(dir: &Path, yaml: &str) -> Compiled {
    let path = dir.join("agents.yml");
    std::fs::write(&path, yaml).unwrap();
    compile_str(&path, yaml, Format::Yaml).unwrap_or_else(|e| panic!("{e:?}"))
}

/// Compile `yaml` and run its process `target`; (result, run directory).
fn run(
    dir: &Path,
    yaml: &str,
    target: &str,
) -> (
    Result<caramba::agents::ProcessOutcome, caramba::agents::AgentError>,
    PathBuf,
) {
    let c = compile(dir, yaml);
    let p = c.process(Some(target)).expect("a process target").clone();
    let runs = dir.join("runs");
    let out = caramba::agents::run_process(&c.plan.name, &p, &runs);
    (out, runs.join(&c.plan.name).join(target))
}

fn json_file(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

const REPORT: &str = r#"{"metadata": {"name": "dba_test"},
  "summary": {"teacher_perplexity": 15.07381938803109, "student_perplexity": 9.328138687489226, "kvcache_reduction": 2.0}}"#;

fn manifest(url: &str, body: &str) -> String {
    format!(
        "version: 2\nname: t\ntargets:\n  - type: process\n    name: p\n    endpoint: {{url: \"{url}\", model: fake-model}}\n{body}"
    )
}

// ---- compile-time checks ------------------------------------------------------------------

#[test]
fn the_preset_compiles_and_lists_its_processes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let c = caramba::compiler::compile(&root.join("presets/agents_paper.yml")).unwrap();
    let names: Vec<(&str, &str)> = c
        .plan
        .processes
        .iter()
        .map(|p| (p.name.as_str(), p.process.kind()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("write", "paper_write"),
            ("review", "paper_review"),
            ("chat", "multiplex_chat"),
            ("loop", "research_loop")
        ]
    );
    assert_eq!(c.plan.default_target, "write");
    assert_eq!(c.process(None).unwrap().name, "write");
    assert_eq!(c.process(Some("process:review")).unwrap().name, "review");
    let plan = caramba::compiler::render_plan(&c);
    assert!(plan.contains("process write (type paper_write): team [writer=writer], endpoint caramba serve in-process (smollm2-135m)"), "{plan}");
    caramba::compiler::compile(&root.join("presets/agents_loop_tiny.yml")).unwrap();
}

#[test]
fn process_problems_are_reported_at_their_paths() {
    let yaml = "version: 2\nname: t\ntargets:\n  - type: process\n    name: w\n    team: {writer: nobody}\n    endpoint: {url: ftp://x, temperature: 3}\n    budget: {max_calls: 0}\n    process: {type: paper_write, report: r.json, sections: []}\n  - type: process\n    name: c\n    process: {type: multiplex_chat}\n  - type: process\n    name: l\n    process: {type: research_loop, manifest: m.yml, knobs: [{path: \"a..b\"}]}\n";
    let err = compile_str(Path::new("t.yml"), yaml, Format::Yaml).unwrap_err();
    let got: Vec<(String, Option<usize>)> = err.problems().iter().map(|p| (p.path.clone(), p.line)).collect();
    for (path, line) in [
        ("targets[0].team.writer", 6),
        ("targets[0].endpoint.url", 7),
        ("targets[0].endpoint.temperature", 7),
        ("targets[0].budget.max_calls", 8),
        ("targets[0].process.sections", 9),
        ("targets[1].team", 10), // absent: placed at the target
        ("targets[2].process.knobs[0].path", 15),
    ] {
        assert!(
            got.iter().any(|(p, l)| p == path && *l == Some(line)),
            "{path}:{line} not in {got:?}"
        );
    }
    let p = err
        .problems()
        .iter()
        .find(|p| p.path == "targets[0].team.writer")
        .unwrap();
    assert!(
        p.help
            .as_deref()
            .unwrap()
            .contains("writer, reviewer, researcher"),
        "{p:?}"
    );
}

#[test]
fn unknown_fields_and_types_point_into_the_process() {
    let base = "version: 2\ntargets:\n  - type: process\n    name: w\n";
    for (body, path) in [
        (
            "    process: {type: paper_write, report: r.json, colour: red}\n",
            "targets[0].process.colour",
        ),
        (
            "    process: {type: paper_wrote, report: r.json}\n",
            "targets[0].process",
        ),
        (
            "    budget: {max_tokens: lots}\n    process: {type: paper_write, report: r.json}\n",
            "targets[0].budget.max_tokens",
        ),
        (
            "    oops: 1\n    process: {type: paper_write, report: r.json}\n",
            "targets[0].oops",
        ),
    ] {
        let err = compile_str(Path::new("t.yml"), &format!("{base}{body}"), Format::Yaml).unwrap_err();
        let p = &err.problems()[0];
        assert!(p.path.starts_with(path), "{body}: {p:?}");
    }
}

#[test]
fn experiment_targets_keep_their_written_index_beside_processes() {
    let yaml = "version: 2\ntargets:\n  - type: process\n    name: w\n    process: {type: paper_write, report: r.json}\n  - name: quick\n    data: {path: d.npy, block_size: 0}\n    runs: [{id: r, steps: 1}]\n";
    let err = compile_str(Path::new("t.yml"), yaml, Format::Yaml).unwrap_err();
    assert!(
        err.problems()
            .iter()
            .all(|p| p.path.starts_with("targets[1]") || p.path == "model"),
        "{:?}",
        err.problems()
    );
    let typed = "version: 2\ntargets:\n  - type: process\n    name: w\n    process: {type: paper_write, report: r.json}\n  - name: quick\n    data: {path: d.npy, block_size: x}\n    runs: [{id: r, steps: 1}]\n";
    let err = compile_str(Path::new("t.yml"), typed, Format::Yaml).unwrap_err();
    assert_eq!(err.problems()[0].path, "targets[1].data.block_size");
    let dup = "version: 2\ntargets:\n  - type: process\n    name: w\n    process: {type: paper_write, report: r.json}\n  - type: process\n    name: w\n    process: {type: paper_write, report: r.json}\n";
    let err = compile_str(Path::new("t.yml"), dup, Format::Yaml).unwrap_err();
    assert!(
        err.problems()[0]
            .message
            .contains("used twice (also by targets[0])"),
        "{:?}",
        err.problems()
    );
}

// ---- against a fake endpoint ---------------------------------------------------------------

#[test]
fn paper_write_drafts_sections_audits_numbers_and_stops_at_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("report.json"), REPORT).unwrap();
    let f = fake(&[
        "## Abstract\nThe student reaches perplexity 9.33 against 15.07 at half the KV cache, and 97.5% accuracy.",
        "never sent",
    ]);
    let body = format!(
        "    budget: {{max_calls: 1}}\n    process: {{type: paper_write, report: \"{}\", sections: [abstract, results], section_tokens: 50}}\n",
        dir.path().join("report.json").display()
    );
    let (out, rd) = run(dir.path(), &manifest(&f.url, &body), "p");
    let out = out.unwrap();
    let md = std::fs::read_to_string(rd.join("paper.md")).unwrap();
    assert!(
        md.starts_with("# dba_test\n\n> Drafted by a language model"),
        "{md}"
    );
    assert!(
        md.contains("## Abstract\n\nThe student reaches perplexity 9.33"),
        "heading dropped: {md}"
    );
    assert!(
        md.contains("## Results\n\n*(not written: the budget was spent first)*"),
        "{md}"
    );
    assert!(md.contains("| `summary.teacher_perplexity` | 15.07 |"), "{md}");
    let r = &out.summary["result"];
    assert_eq!(r["sections"][0]["unsupported_numbers"], json!(["97.5"]));
    assert_eq!(r["sections_written"], 1);
    assert!(r["stopped"].as_str().unwrap().contains("max_calls"));
    let facts = std::fs::read_to_string(rd.join("facts.txt")).unwrap();
    assert!(facts.contains("summary.student_perplexity = 9.328"));
    // The request: the writer persona, the facts, the section, the token cap.
    let reqs = f.requests.lock().unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0]["model"], "fake-model");
    assert_eq!(reqs[0]["max_tokens"], 50);
    assert_eq!(reqs[0]["temperature"], 0.0);
    assert!(
        reqs[0]["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("careful scientific writer")
    );
    assert!(
        reqs[0]["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("Write the abstract section")
    );
    let summary = json_file(&rd.join("summary.json"));
    assert_eq!(summary["status"], "ok");
    assert_eq!(summary["budget"]["calls"], 1);
    let t = read(&rd.join("transcript.jsonl")).unwrap();
    let kinds: Vec<EntryKind> = t.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EntryKind::Note,
            EntryKind::Request,
            EntryKind::Reply,
            EntryKind::Note
        ]
    );
    assert!(json_file(&rd.join("process.json"))["process"]["type"] == "paper_write");
}

#[test]
fn paper_write_latex() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("report.json"), REPORT).unwrap();
    let f = fake(&["We halve the KV cache & keep 9.328."]);
    let body = format!(
        "    process: {{type: paper_write, report: \"{}\", sections: [results], format: latex, title: \"A_B\"}}\n",
        dir.path().join("report.json").display()
    );
    let (out, rd) = run(dir.path(), &manifest(&f.url, &body), "p");
    out.unwrap();
    let tex = std::fs::read_to_string(rd.join("paper.tex")).unwrap();
    assert!(tex.contains("\\title{A\\_B}"));
    assert!(
        tex.contains("\\section{Results}\nWe halve the KV cache \\& keep 9.328."),
        "{tex}"
    );
    assert!(tex.contains("\\end{document}"));
}

#[test]
fn paper_review_repairs_and_retries_malformed_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("paper.md"), "# A paper\nWe halve the cache.").unwrap();
    let f = fake(&[
        "I think this paper is quite good overall.",
        "Sure! ```json\n{'score': '7/10', 'recommendation': 'Minor revision', strengths: ['clear'], 'weaknesses': ['one seed',], 'proposed_experiments': ['a', 'b', 'c']\n```",
    ]);
    let body = format!(
        "    process: {{type: paper_review, paper: \"{}\", strictness: workshop, max_proposed_experiments: 2}}\n",
        dir.path().join("paper.md").display()
    );
    let (out, rd) = run(dir.path(), &manifest(&f.url, &body), "p");
    out.unwrap();
    let review = json_file(&rd.join("review.json"));
    assert_eq!(review["overall_score"], 7.0);
    assert_eq!(review["recommendation"], "style_fix");
    assert_eq!(review["method"], "json_repaired");
    assert_eq!(review["json_attempts"], 2);
    assert_eq!(review["proposed_experiments"], json!(["a", "b"]));
    assert_eq!(review["approve_at"], 5.0);
    assert_eq!(
        review["consistent"], false,
        "7 ≥ 5 at a workshop, but not `approve`"
    );
    let reqs = f.requests.lock().unwrap();
    assert_eq!(reqs.len(), 2);
    let retry = reqs[1]["messages"].as_array().unwrap();
    assert_eq!(retry.len(), 4, "system, prompt, the bad reply, the retry");
    assert_eq!(retry[2]["content"], "I think this paper is quite good overall.");
    assert!(
        retry[3]["content"].as_str().unwrap().contains("no JSON object"),
        "{}",
        retry[3]
    );
    assert!(
        reqs[0]["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("a workshop")
    );
}

#[test]
fn paper_review_falls_back_to_one_field_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("paper.md"), "# A paper").unwrap();
    let f = fake(&[
        "{\"overall_score\": 11, \"recommendation\": \"approve\"}",
        "{\"recommendation\": \"approve\"",
        "Score: 4.",
        "I would say major revision.",
        "The writing is clear.\nMore text.",
        "Only one seed.",
        "Run three seeds.",
    ]);
    let body = format!(
        "    process: {{type: paper_review, paper: \"{}\", attempts: 2}}\n",
        dir.path().join("paper.md").display()
    );
    let (out, rd) = run(dir.path(), &manifest(&f.url, &body), "p");
    out.unwrap();
    let review = json_file(&rd.join("review.json"));
    assert_eq!(review["method"], "fields");
    assert_eq!(review["overall_score"], 4.0);
    assert_eq!(review["recommendation"], "major_revision");
    assert_eq!(review["strengths"], json!(["The writing is clear."]));
    assert_eq!(review["proposed_experiments"], json!(["Run three seeds."]));
    assert_eq!(review["consistent"], true);
    let notes: Vec<String> = read(&rd.join("transcript.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EntryKind::Note)
        .map(|e| e.content)
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("attempt 1") && n.contains("outside 1 to 10")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("attempt 2") && n.contains("`overall_score` is missing")),
        "{notes:?}"
    );
}

#[test]
fn paper_review_without_an_answer_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("paper.md"), "# A paper").unwrap();
    let f = fake(&["no", "{", "{'overall_score': 'high'}"]);
    let body = format!(
        "    process: {{type: paper_review, paper: \"{}\", attempts: 3, field_fallback: false}}\n",
        dir.path().join("paper.md").display()
    );
    let (out, rd) = run(dir.path(), &manifest(&f.url, &body), "p");
    let e = out.unwrap_err();
    assert!(e.to_string().contains("no usable answer after 3 attempts"), "{e}");
    assert!(e.to_string().contains("must be a number"), "{e}");
    let summary = json_file(&rd.join("summary.json"));
    assert_eq!(summary["status"], "failed");
    assert_eq!(summary["budget"]["calls"], 3);
    assert!(!rd.join("review.json").exists());
    // A missing paper is an input error (exit code 2), also recorded.
    let body = "    process: {type: paper_review, paper: /nonexistent/paper.md}\n";
    let (out, _) = run(dir.path(), &manifest(&f.url, body), "p");
    assert_eq!(out.unwrap_err().exit_code(), 2);
}

#[test]
fn multiplex_chat_routes_hands_off_and_keeps_one_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let f = fake(&[
        "It is not shown. @engineer what does it cost?",
        "Half the memory.",
        "a",
        "b",
        "c",
        "never sent",
    ]);
    let body = "    team: {theorist: theorist, skeptic: skeptic, engineer: engineer}\n    budget: {max_calls: 6}\n    process: {type: multiplex_chat, topic: DBA, messages: [\"@skeptic is it real?\", \"and now everyone\"], reply_tokens: 20}\n";
    let (out, rd) = run(dir.path(), &manifest(&f.url, body), "p");
    let out = out.unwrap();
    let chat: Vec<(String, String)> = read(&rd.join("chat.jsonl"))
        .unwrap()
        .into_iter()
        .map(|e| (e.speaker, e.content))
        .collect();
    assert_eq!(chat[0], ("topic".into(), "DBA".into()));
    assert_eq!(chat[1].0, "user");
    assert_eq!(
        chat[2],
        (
            "skeptic".into(),
            "It is not shown. @engineer what does it cost?".into()
        )
    );
    assert_eq!(
        chat[3],
        ("engineer".into(), "Half the memory.".into()),
        "the hand-off"
    );
    assert_eq!(chat[4], ("user".into(), "and now everyone".into()));
    let mut broadcast: Vec<&str> = chat[5..].iter().map(|(s, _)| s.as_str()).collect();
    broadcast.sort();
    assert_eq!(broadcast, vec!["engineer", "skeptic", "theorist"]);
    assert_eq!(out.summary["result"]["replies"], 5);
    assert!(out.summary["result"]["stopped"].is_null(), "{}", out.summary);
    let reqs = f.requests.lock().unwrap();
    let engineer = &reqs[1]["messages"];
    assert!(
        engineer[0]["content"]
            .as_str()
            .unwrap()
            .contains("You are @engineer in a group chat with the user and @skeptic, @theorist.")
    );
    assert!(
        engineer[1]["content"]
            .as_str()
            .unwrap()
            .contains("[@skeptic]: It is not shown."),
        "{engineer}"
    );
    // The budget stops the chat cleanly before the third message.
    let body = "    team: {skeptic: skeptic}\n    budget: {max_calls: 1}\n    process: {type: multiplex_chat, messages: [one, two]}\n";
    let f = fake(&["x", "y"]);
    let (out, _) = run(dir.path(), &manifest(&f.url, body), "p");
    let out = out.unwrap();
    assert_eq!(out.summary["result"]["replies"], 1);
    assert!(
        out.summary["result"]["stopped"]
            .as_str()
            .unwrap()
            .contains("max_calls")
    );
}

/// A tiny byte-level manifest that trains in seconds, its data prepared from the license texts.
fn tiny_manifest(dir: &Path) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("presets/agents_loop_tiny.yml"))
        .unwrap()
        .replace(
            "data/common_licenses.bytes.npy",
            &dir.join("licenses.npy").display().to_string(),
        )
        .replace("steps: 20", "steps: 4");
    let path = dir.join("tiny.yml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn research_loop_runs_proposals_and_records_every_round() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_manifest(dir.path());
    // why: the loop runs `caramba run` as a child; under `cargo test` this executable is the test.
    // SAFETY: no other test of this binary reads or writes CARAMBA_EXE.
    unsafe { std::env::set_var("CARAMBA_EXE", env!("CARGO_BIN_EXE_caramba")) };
    let f = fake(&[
        "{\"path\": \"targets[0].runs[0].steps\", \"value\": 6, \"why\": \"more steps\"}",
        "lower the lr",
        "{\"path\": \"model.d_model\", \"value\": 64}",
    ]);
    let body = format!(
        "    process:\n      type: research_loop\n      manifest: \"{}\"\n      rounds: 2\n      run_timeout_s: 300\n      knobs: [{{path: \"targets[0].runs[0].steps\", min: 2, max: 8, integer: true}}, {{path: \"targets[0].runs[0].train.lr\", min: 1.0e-4, max: 1.0e-2}}]\n",
        base.display()
    );
    let (out, rd) = run(dir.path(), &manifest(&f.url, &body), "p");
    let out = out.unwrap();
    let lp = json_file(&rd.join("loop.json"));
    let rounds = lp["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 3, "{lp}");
    assert_eq!(rounds[0]["status"], "ok", "{lp}");
    assert!(rounds[0]["metric"].as_f64().unwrap() > 0.0);
    assert_eq!(rounds[1]["status"], "ok", "{lp}");
    assert_eq!(rounds[1]["change"]["value"], 6.0);
    assert_eq!(rounds[2]["status"], "no_proposal");
    assert!(
        rounds[2]["detail"].as_str().unwrap().contains("is not a knob"),
        "{lp}"
    );
    let m = std::fs::read_to_string(rd.join("rounds/1/manifest.yml")).unwrap();
    assert!(m.contains("steps: 6"), "{m}");
    assert!(out.summary["result"]["best"].as_f64().is_some());
    // The second proposal request shows round 0 and round 1 with their metrics.
    let reqs = f.requests.lock().unwrap();
    let last = reqs[1]["messages"][1]["content"].as_str().unwrap();
    assert!(last.contains("- round 0: unchanged: val_loss = "), "{last}");
    assert!(
        last.contains("- round 1: targets[0].runs[0].steps = 6: val_loss = "),
        "{last}"
    );
}

// ---- against a real `caramba serve` on SmolLM2 -------------------------------------------------

fn smollm2_present() -> bool {
    match caramba::loader::fetch("smollm2-135m") {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipping: SmolLM2-135M could not be fetched ({e})");
            false
        }
    }
}

/// paper_write then paper_review on the committed report, through the `caramba` binary, each
/// starting its own in-process server: small budgets (a CPU decodes a few tokens a second in a
/// debug build), so the prose is short and poor; the machinery is what is checked.
#[test]
fn smollm2_writes_and_reviews_a_paper() {
    if !smollm2_present() {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let report = root.join("docs/results/smollm2_135m_dba_paper/report.json");
    let paper = dir.path().join("runs/smol/write/paper.md");
    let yaml = format!(
        "version: 2\nname: smol\ntargets:\n  - type: process\n    name: write\n    budget: {{max_tokens: 60, max_calls: 2}}\n    process: {{type: paper_write, report: \"{}\", facts: [summary], sections: [results], section_tokens: 40, max_fact_chars: 1200}}\n  - type: process\n    name: review\n    budget: {{max_tokens: 500, max_calls: 8}}\n    process: {{type: paper_review, paper: \"{}\", attempts: 1, review_tokens: 60, max_proposed_experiments: 1, max_paper_chars: 2500}}\n",
        report.display(),
        paper.display()
    );
    let manifest = dir.path().join("smol.yml");
    std::fs::write(&manifest, yaml).unwrap();
    for target in ["write", "review"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_caramba"))
            .arg("run")
            .arg(&manifest)
            .args(["--target", target, "--runs-dir"])
            .arg(dir.path().join("runs"))
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{log}");
        assert!(out.status.success(), "{target}: {log}");
        let summary = json_file(&dir.path().join("runs/smol").join(target).join("summary.json"));
        assert_eq!(summary["status"], "ok");
        assert!(
            summary["endpoint"]
                .as_str()
                .unwrap()
                .contains("caramba serve started in-process")
        );
        assert!(
            summary["budget"]["completion_tokens"].as_u64().unwrap()
                <= summary["budget"]["limits"]["max_tokens"].as_u64().unwrap()
        );
    }
    let md = std::fs::read_to_string(&paper).unwrap();
    assert!(md.contains("## Results\n\n"));
    let results = md.split("## Results\n\n").nth(1).unwrap();
    assert!(!results.starts_with("*(not written"), "{md}");
    let review = json_file(&dir.path().join("runs/smol/review/review.json"));
    let score = review["overall_score"].as_f64().unwrap();
    assert!((1.0..=10.0).contains(&score), "{review}");
    eprintln!("review by SmolLM2: {review}");
}

#[test]
fn smollm2_chats_with_two_personas() {
    if !smollm2_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let yaml = "version: 2\nname: smol\ntargets:\n  - type: process\n    name: chat\n    team: {skeptic: skeptic, engineer: engineer}\n    budget: {max_tokens: 80, max_calls: 3}\n    process: {type: multiplex_chat, topic: \"A student model has half the KV cache of its teacher.\", messages: [\"@skeptic is that enough?\"], reply_tokens: 24, max_hops: 1}\n";
    let c = compile(dir.path(), yaml);
    let p = c.process(Some("chat")).unwrap().clone();
    let out = caramba::agents::run_process("smol", &p, &dir.path().join("runs")).unwrap();
    let chat = read(&out.dir.join("chat.jsonl")).unwrap();
    assert_eq!(chat[2].speaker, "skeptic", "{chat:?}");
    assert!(!chat[2].content.is_empty());
    let t = read(&out.dir.join("transcript.jsonl")).unwrap();
    let replies: Vec<_> = t.iter().filter(|e| e.kind == EntryKind::Reply).collect();
    assert!(
        replies
            .iter()
            .all(|r| r.usage.as_ref().unwrap().completion_tokens <= 24)
    );
}
