//! `caramba prepare` end to end: writes the token file and prints a summary; bad inputs exit 2.

use assert_cmd::Command;
use caramba::data::TokenFile;

#[test]
fn prepare_writes_tokens_and_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.txt"), "hello prepare\n").expect("write");
    let out = dir.path().join("corpus.npy");
    let assert = Command::cargo_bin("caramba")
        .expect("binary")
        .args(["prepare", "--tokenizer", "bytes", "--input"])
        .arg(format!("{}/*.txt", dir.path().display()))
        .arg("--output")
        .arg(&out)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(
        stdout.contains("1 files") && stdout.contains("14 tokens"),
        "{stdout}"
    );
    assert_eq!(TokenFile::open(&out).expect("open").len(), 14);
}

#[test]
fn prepare_without_matches_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let assert = Command::cargo_bin("caramba")
        .expect("binary")
        .args(["prepare", "--input"])
        .arg(format!("{}/*.none", dir.path().display()))
        .arg("--output")
        .arg(dir.path().join("x.npy"))
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stderr.contains("*.none"), "{stderr}");
}
