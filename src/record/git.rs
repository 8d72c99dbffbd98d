//! The git revision of the working directory, for provenance in `run.json` and `report.json`.

/// `git rev-parse HEAD` of the working directory, when it is a git checkout (and git is installed).
pub fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
