//! `caramba serve` over real HTTP, in-process on an ephemeral port, with the tiny golden Llama
//! (its tokenizer, plus a chat template written next to a copy of it): the routes, greedy output
//! equal to the library's `Generator`, streaming equal to the whole response, usage counts, the
//! OpenAI error shapes and statuses (400, 401, 404, 413), the context check, and concurrency.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use caramba::infer::{
    CacheConfig, ChatTemplate, GenerateConfig, Generator, Message, SamplingParams, TextStream,
};
use caramba::loader::{LoadOptions, LoadedModel, load};
use caramba::serve::{BackgroundServer, Limits, ServeConfig, ServedModel, spawn};
use serde_json::{Value, json};

const TEMPLATE: &str = "{% for m in messages %}<s>{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<s>assistant:{% endif %}";

/// A copy of the tiny golden Llama with a chat template.
fn model_dir() -> tempfile::TempDir {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tiny_llama");
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
    ] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("chat_template.jinja"), TEMPLATE).unwrap();
    dir
}

fn load_model(dir: &Path) -> LoadedModel {
    load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap()
}

struct Fixture {
    server: BackgroundServer,
    reference: LoadedModel,
    _dir: tempfile::TempDir,
}

fn start(limits: Limits, api_key: Option<&str>) -> Fixture {
    let dir = model_dir();
    let served = ServedModel {
        name: "tiny".into(),
        loaded: load_model(dir.path()),
        cache: CacheConfig::default(),
        draft: None,
    };
    let cfg = ServeConfig {
        host: "127.0.0.1".into(),
        port: 0,
        api_key: api_key.map(String::from),
        limits,
    };
    let server = spawn(served, cfg).unwrap();
    Fixture {
        server,
        reference: load_model(dir.path()),
        _dir: dir,
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// POST raw bytes; (status, body text).
fn post_raw(url: &str, body: &[u8], key: Option<&str>) -> (u16, String) {
    let mut req = agent().post(url).header("Content-Type", "application/json");
    if let Some(k) = key {
        req = req.header("Authorization", &format!("Bearer {k}"));
    }
    let mut resp = req.send(body).unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let (status, text) = post_raw(url, body.to_string().as_bytes(), None);
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

fn get(url: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = agent().get(url);
    if let Some(k) = key {
        req = req.header("Authorization", &format!("Bearer {k}"));
    }
    let mut resp = req.call().unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

/// The `data:` payloads of a server-sent event stream.
fn sse_data(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim_start().to_string())
        .collect()
}

/// An OpenAI error body: (type, param, code).
fn error_of(body: &Value) -> (String, Option<String>, Option<String>) {
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    (
        e["type"].as_str().unwrap().to_string(),
        e["param"].as_str().map(String::from),
        e["code"].as_str().map(String::from),
    )
}

/// What the library generates greedily for `messages`: (text, prompt tokens, generated tokens).
fn library_greedy(m: &LoadedModel, messages: &[Message], max_new_tokens: usize) -> (String, usize, usize) {
    let tok = m.tokenizer.as_ref().unwrap();
    let template = ChatTemplate::new(TEMPLATE, "<s>", "</s>").unwrap();
    let prompt = tok
        .encode(&template.render(messages, true).unwrap(), false)
        .unwrap();
    let cfg = GenerateConfig {
        max_new_tokens,
        sampling: SamplingParams::greedy(),
        eos_token_ids: tok.eos_token_ids.clone(),
    };
    let mut g = Generator::new(&m.model, m.max_seq_len, DType::F32, &Device::Cpu);
    let ids = g.generate(&prompt, &cfg).unwrap();
    let mut text = TextStream::new(tok, vec![]);
    for &t in ids.iter().filter(|t| !cfg.eos_token_ids.contains(t)) {
        text.push(t).unwrap();
    }
    text.finish();
    (text.text().to_string(), prompt.len(), ids.len())
}

fn chat_body(content: &str, max_tokens: usize, stream: bool) -> Value {
    json!({
        "model": "tiny",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

#[test]
fn models_and_health() {
    let f = start(Limits::default(), None);
    let (status, body) = get(&format!("{}/v1/models", f.server.url()), None);
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], "tiny");
    assert_eq!(body["data"][0]["max_model_len"], 256);
    let (status, body) = get(&format!("{}/health", f.server.url()), None);
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let (status, body) = get(&format!("{}/v1/nothing", f.server.url()), None);
    assert_eq!(status, 404);
    error_of(&body);
}

#[test]
fn greedy_chat_equals_the_library_and_streaming_equals_whole() {
    let f = start(Limits::default(), None);
    let url = format!("{}/v1/chat/completions", f.server.url());
    let messages = [
        Message::new("system", "be brief"),
        Message::new("user", "hello there"),
    ];
    let (want, prompt_tokens, generated) = library_greedy(&f.reference, &messages, 24);

    let (status, body) = post(&url, &chat_body("hello there", 24, false));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], "tiny");
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], want.as_str());
    let finish = if generated == 24 { "length" } else { "stop" };
    assert_eq!(choice["finish_reason"], finish);
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": prompt_tokens, "completion_tokens": generated, "total_tokens": prompt_tokens + generated})
    );

    let (status, text) = post_raw(
        &url,
        chat_body("hello there", 24, true).to_string().as_bytes(),
        None,
    );
    assert_eq!(status, 200, "{text}");
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, want);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let finished: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["choices"][0]["finish_reason"], finish);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], generated);
    assert_eq!(usage["prompt_tokens"], prompt_tokens);
}

#[test]
fn completions_whole_and_streamed_with_stop() {
    let f = start(Limits::default(), None);
    let url = format!("{}/v1/completions", f.server.url());
    let body = json!({"model": "tiny", "prompt": "the quick brown", "max_tokens": 16, "temperature": 0});
    let (status, whole) = post(&url, &body);
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "text_completion");
    let text = whole["choices"][0]["text"].as_str().unwrap().to_string();
    let mut streamed_body = body.clone();
    streamed_body["stream"] = json!(true);
    let (status, sse) = post_raw(&url, streamed_body.to_string().as_bytes(), None);
    assert_eq!(status, 200);
    let data = sse_data(&sse);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let streamed: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(String::from))
        .collect();
    assert_eq!(streamed, text);

    // A stop string taken from the middle of the greedy text cuts it there.
    let chars: Vec<char> = text.chars().collect();
    if chars.len() >= 6 {
        let stop: String = chars[3..5].iter().collect();
        let cut = &text[..text.find(&stop).unwrap()];
        let mut with_stop = body.clone();
        with_stop["stop"] = json!([stop]);
        let (status, r) = post(&url, &with_stop);
        assert_eq!(status, 200);
        assert_eq!(r["choices"][0]["text"], cut);
        assert_eq!(r["choices"][0]["finish_reason"], "stop");
    }
}

#[test]
fn bad_requests_get_openai_errors() {
    let f = start(
        Limits {
            max_body_bytes: 4096,
            max_tokens: 100,
            ..Limits::default()
        },
        None,
    );
    let url = format!("{}/v1/chat/completions", f.server.url());
    // Not JSON, not UTF-8, wrong types: 400 naming what is wrong.
    let (status, text) = post_raw(&url, b"{\"model\": ", None);
    assert_eq!(status, 400);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error_of(&body).0, "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let (status, text) = post_raw(&url, b"{\"model\": \"tiny\xff\"}", None);
    assert_eq!(status, 400);
    assert!(text.contains("UTF-8"), "{text}");
    let (status, body) = post(
        &url,
        &json!({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}),
    );
    assert_eq!(status, 400);
    assert_eq!(error_of(&body).1.as_deref(), Some("max_tokens"));
    let (status, body) = post(
        &url,
        &json!({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 3}),
    );
    assert_eq!(status, 400);
    assert_eq!(error_of(&body).1.as_deref(), Some("n"));
    // Another model's name: 404.
    let (status, body) = post(
        &url,
        &json!({"model": "gpt-5", "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(status, 404);
    assert_eq!(error_of(&body).2.as_deref(), Some("model_not_found"));
    // A body over the limit: 413.
    let big = json!({"model": "tiny", "messages": [{"role": "user", "content": "x".repeat(10_000)}]});
    let (status, body) = post(&url, &big);
    assert_eq!(status, 413);
    assert_eq!(error_of(&body).2.as_deref(), Some("request_too_large"));
    // max_tokens above the server's limit, and a prompt + max_tokens beyond the context: 400.
    let (status, body) = post(&url, &chat_body("hi", 101, false));
    assert_eq!(status, 400);
    assert_eq!(error_of(&body).1.as_deref(), Some("max_tokens"));
    let long = "word ".repeat(600);
    let (status, body) = post(&url, &chat_body(&long[..3000], 10, false));
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_of(&body).2.as_deref(), Some("context_length_exceeded"));
    let (status, body) = post(&url, &chat_body("hello", 100, false));
    assert_eq!(status, 200, "{body}");
    // A wrong method: 405 in the same shape.
    let (status, body) = get(&url, None);
    assert_eq!(status, 405);
    error_of(&body);
}

#[test]
fn api_key_is_required_when_set() {
    let f = start(Limits::default(), Some("sekrit"));
    let models = format!("{}/v1/models", f.server.url());
    let (status, body) = get(&models, None);
    assert_eq!(status, 401);
    assert_eq!(
        error_of(&body),
        (
            "authentication_error".into(),
            None,
            Some("invalid_api_key".into())
        )
    );
    assert_eq!(get(&models, Some("wrong")).0, 401);
    assert_eq!(get(&models, Some("sekrit")).0, 200);
    let url = format!("{}/v1/chat/completions", f.server.url());
    let body = chat_body("hi", 4, false).to_string();
    assert_eq!(post_raw(&url, body.as_bytes(), Some("nope")).0, 401);
    assert_eq!(post_raw(&url, body.as_bytes(), Some("sekrit")).0, 200);
    assert_eq!(get(&format!("{}/health", f.server.url()), None).0, 200);
}

#[test]
fn concurrent_requests_all_succeed() {
    let f = start(Limits::default(), None);
    let url = format!("{}/v1/chat/completions", f.server.url());
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut body = chat_body(&format!("request number {i}"), 12, i % 2 == 0);
                body["temperature"] = json!(0.8);
                body["seed"] = json!(i);
                post_raw(&url, body.to_string().as_bytes(), None)
            })
        })
        .collect();
    for h in handles {
        let (status, text) = h.join().unwrap();
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("chatcmpl-"));
    }
}

#[test]
fn a_full_queue_answers_503_and_everything_else_succeeds() {
    let f = start(
        Limits {
            queue: 1,
            ..Limits::default()
        },
        None,
    );
    let url = format!("{}/v1/completions", f.server.url());
    let handles: Vec<_> = (0..12)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let body = json!({"model": "tiny", "prompt": format!("prompt {i}"), "max_tokens": 200, "temperature": 0});
                post_raw(&url, body.to_string().as_bytes(), None)
            })
        })
        .collect();
    for h in handles {
        let (status, text) = h.join().unwrap();
        match status {
            200 => assert!(text.contains("text_completion")),
            503 => assert!(text.contains("server_overloaded"), "{text}"),
            other => panic!("{other}: {text}"),
        }
    }
}

/// With a queue of one, streamed requests whose clients hang up after the status line never hold
/// the queue: each next request is accepted, and so is a last whole one.
#[test]
fn a_client_that_disconnects_frees_the_model() {
    use std::io::{BufRead, BufReader, Write};
    let f = start(
        Limits {
            queue: 1,
            ..Limits::default()
        },
        None,
    );
    let body = json!({"model": "tiny", "prompt": "a", "max_tokens": 250, "temperature": 0, "stream": true})
        .to_string();
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(f.server.addr()).unwrap();
        write!(
            s,
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut first = String::new();
        BufReader::new(&s).read_line(&mut first).unwrap();
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        drop(s);
        // why: the server learns of the close from the socket; give it a moment.
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let url = format!("{}/v1/completions", f.server.url());
    let (status, body) = post(&url, &json!({"model": "tiny", "prompt": "b", "max_tokens": 4}));
    assert_eq!(status, 200, "{body}");
}

/// Kills the server process when the test ends, passed or not.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// tests/serve_openai.py — the official `openai` Python client — against `caramba serve` on
/// SmolLM2-135M-Instruct. Skipped, with a message, without python3, the `openai` package or the
/// model.
#[test]
fn openai_python_client_against_smollm2() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let has_openai = Command::new("python3")
        .args(["-c", "import openai"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_openai {
        eprintln!("skipping: python3 with the `openai` package is not installed (pip install openai)");
        return;
    }
    if let Err(e) = caramba::loader::fetch("smollm2-135m") {
        eprintln!("skipping: SmolLM2-135M could not be fetched ({e})");
        return;
    }
    let mut server = Child(
        Command::new(env!("CARGO_BIN_EXE_caramba"))
            .args([
                "serve",
                "--model",
                "smollm2-135m",
                "--port",
                "0",
                "--max-body-bytes",
                "65536",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = server.0.stdout.take().unwrap();
    let mut url = String::new();
    std::io::BufReader::new(stdout).read_line(&mut url).unwrap();
    let url = url.trim();
    assert!(url.starts_with("http://127.0.0.1:"), "the server printed {url:?}");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/serve_openai.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([url, "smollm2-135m"])
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{report}");
    assert!(out.status.success(), "{report}");
}

/// A client that sends its headers too slowly is cut off (slow-loris), and one whose body does
/// not arrive in time gets a 408.
#[test]
fn slow_clients_are_cut_off() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let f = start(
        Limits {
            header_timeout: Duration::from_millis(500),
            body_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
        None,
    );
    let mut s = std::net::TcpStream::connect(f.server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the connection stayed open"
    );

    let mut s = std::net::TcpStream::connect(f.server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"model\"")
        .unwrap();
    let mut reply = [0u8; 12];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"HTTP/1.1 408");
}
