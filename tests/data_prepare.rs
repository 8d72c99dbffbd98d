//! `prepare`: text files → `.npy` tokens (bytes and HF tokenizers), document separators, dtype
//! choice, atomic output, and `ensure_prepared` on a data block.

use std::fs;
use std::path::Path;

use caramba::data::{
    DataError, DataSpec, PrepareSpec, TokenDtype, TokenFile, Tokenizer, ensure_prepared, prepare,
};
use rand::Rng;

fn spec(input: Vec<String>) -> PrepareSpec {
    PrepareSpec {
        input,
        debian_package: None,
        tokenizer: None,
        separate_documents: true,
    }
}

/// A word-level HF tokenizer.json: `<|endoftext|>` = 0, `[UNK]` = 1, then `words`.
fn word_tokenizer(path: &Path, words: &[String]) {
    let mut vocab = serde_json::Map::new();
    vocab.insert("<|endoftext|>".into(), 0.into());
    vocab.insert("[UNK]".into(), 1.into());
    for (i, w) in words.iter().enumerate() {
        vocab.insert(w.clone(), (i + 2).into());
    }
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 0, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": false},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    fs::write(path, serde_json::to_string(&json).expect("json")).expect("write tokenizer");
}

#[test]
fn bytes_prepare_concatenates_sorted_files_atomically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = rand::rng();
    let texts: Vec<String> = (0..4)
        .map(|i| {
            format!(
                "doc {i}: {}\n",
                (0..50).map(|_| rng.random_range('a'..='z')).collect::<String>()
            )
        })
        .collect();
    fs::create_dir_all(dir.path().join("txt/sub")).expect("dirs");
    // written out of order and in a subfolder: the output follows sorted paths
    for (name, text) in [
        ("txt/c.txt", &texts[2]),
        ("txt/a.txt", &texts[0]),
        ("txt/sub/d.txt", &texts[3]),
        ("txt/b.txt", &texts[1]),
    ] {
        fs::write(dir.path().join(name), text).expect("write");
    }
    fs::write(dir.path().join("txt/ignored.md"), "not matched").expect("write");
    let out = dir.path().join("out/corpus.npy");
    let pattern = format!("{}/txt/**/*.txt", dir.path().display());
    let summary = prepare(&spec(vec![pattern.clone(), pattern]), &Tokenizer::Bytes, &out).expect("prepare");
    let all: String = texts.concat();
    assert_eq!(
        (summary.files, summary.tokens, summary.bytes),
        (4, all.len(), all.len() as u64)
    );
    assert_eq!(summary.dtype, TokenDtype::U16);
    let file = TokenFile::open(&out).expect("open");
    let ids = file.get(0..file.len()).expect("ids");
    assert_eq!(
        Tokenizer::Bytes.decode(&ids).expect("decode"),
        all,
        "bytes tokenizer, no separators"
    );
    let leftovers: Vec<_> = fs::read_dir(dir.path().join("out"))
        .expect("out")
        .map(|e| e.expect("e").file_name())
        .collect();
    assert_eq!(leftovers, vec!["corpus.npy"], "no temporary file remains");
    assert!(summary.to_string().contains("4 files"), "{summary}");
}

#[test]
fn hf_tokenizer_separates_documents_with_eos_and_widens_big_vocabularies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let words: Vec<String> = ["the", "cat", "sat", "on", "mat"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let tok_path = dir.path().join("tokenizer.json");
    word_tokenizer(&tok_path, &words);
    fs::write(dir.path().join("1.txt"), "the cat sat").expect("write");
    fs::write(dir.path().join("2.txt"), "on the mat dog").expect("write");
    let tok = Tokenizer::from_name(tok_path.to_str().expect("utf-8 path")).expect("load tokenizer");
    assert_eq!((tok.vocab_size(), tok.eos_id()), (7, Some(0)));
    let out = dir.path().join("hf.npy");
    let pattern = format!("{}/*.txt", dir.path().display());
    prepare(&spec(vec![pattern.clone()]), &tok, &out).expect("prepare");
    let file = TokenFile::open(&out).expect("open");
    assert_eq!(file.dtype(), TokenDtype::U16);
    assert_eq!(
        file.get(0..file.len()).expect("ids"),
        vec![2, 3, 4, 0, 5, 2, 6, 1]
    );

    let no_sep = PrepareSpec {
        separate_documents: false,
        ..spec(vec![pattern.clone()])
    };
    prepare(&no_sep, &tok, &out).expect("prepare");
    assert_eq!(TokenFile::open(&out).expect("open").len(), 7);

    // A vocabulary past 65,536 ids needs int32.
    let many: Vec<String> = (0..70_000).map(|i| format!("w{i}")).collect();
    word_tokenizer(&tok_path, &many);
    fs::write(dir.path().join("1.txt"), "w0 w69999").expect("write");
    fs::remove_file(dir.path().join("2.txt")).expect("rm");
    let big = Tokenizer::from_name(tok_path.to_str().expect("utf-8 path")).expect("load");
    let summary = prepare(&spec(vec![pattern]), &big, &out).expect("prepare");
    assert_eq!(summary.dtype, TokenDtype::I32);
    let file = TokenFile::open(&out).expect("open");
    assert_eq!(file.get(0..2).expect("ids"), vec![2, 70_001]);
}

#[test]
fn ensure_prepared_builds_once_and_errors_without_a_recipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text: String = (0..3000).map(|i| if i % 7 == 0 { ' ' } else { 'x' }).collect();
    fs::write(dir.path().join("a.txt"), &text).expect("write");
    let path = dir.path().join("data/tokens.npy");
    let mut data = DataSpec {
        path: path.to_string_lossy().into_owned(),
        block_size: 64,
        tokenizer: None,
        val_frac: None,
        prepare: None,
    };
    let err = ensure_prepared(&data, 0.1, "bytes").expect_err("missing, no prepare");
    assert!(
        matches!(err, DataError::Missing { .. }) && err.to_string().contains("tokens.npy"),
        "{err}"
    );

    data.prepare = Some(spec(vec![format!("{}/*.txt", dir.path().display())]));
    let ready = ensure_prepared(&data, 0.1, "bytes").expect("prepared");
    assert_eq!(ready.dataset.len(caramba::data::Split::Val), 300);
    assert_eq!(ready.tokenizer.vocab_size(), 256);
    let modified = fs::metadata(&path).expect("file").modified().expect("mtime");
    fs::remove_file(dir.path().join("a.txt")).expect("rm input");
    let again = ensure_prepared(
        &DataSpec {
            val_frac: Some(0.5),
            ..data.clone()
        },
        0.1,
        "bytes",
    )
    .expect("reuse");
    assert_eq!(again.dataset.len(caramba::data::Split::Val), 1500);
    assert_eq!(
        fs::metadata(&path).expect("file").modified().expect("mtime"),
        modified,
        "not rebuilt"
    );
}

#[test]
fn unmatched_inputs_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pattern = format!("{}/*.none", dir.path().display());
    let err = prepare(
        &spec(vec![pattern.clone()]),
        &Tokenizer::Bytes,
        &dir.path().join("x.npy"),
    )
    .expect_err("no files");
    assert!(err.to_string().contains(&pattern), "{err}");
}

/// Downloads ~12 MB from the Debian mirror (about 1.5 s here); skips with a message when apt-get
/// cannot reach one.
#[test]
fn debian_package_documentation_becomes_tokens() {
    let reachable = std::process::Command::new("apt-get")
        .args(["download", "--print-uris", "python3.11-doc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !reachable {
        eprintln!("SKIP: apt-get cannot reach a Debian mirror here");
        return;
    }
    let cache = tempfile::tempdir().expect("tempdir");
    // SAFETY: this test is the only one in its process that reads CARAMBA_CACHE.
    unsafe { std::env::set_var("CARAMBA_CACHE", cache.path()) };
    let pkg = PrepareSpec {
        input: vec!["usr/share/doc/python3.11/html/_sources/**/*.rst.txt".into()],
        debian_package: Some("python3.11-doc".into()),
        ..spec(vec![])
    };
    let out = cache.path().join("python-docs.npy");
    let summary = prepare(&pkg, &Tokenizer::Bytes, &out).expect("prepare from the package");
    assert!(summary.files > 400 && summary.tokens > 5_000_000, "{summary}");
    let again = prepare(&pkg, &Tokenizer::Bytes, &out).expect("cached");
    assert_eq!(again, summary);
}
