//! The real LiteLLM package, asked from the tests: the parity scripts in `tests/parity/` run in
//! LiteLLM's venv (`target/litellm-venv`, made by `scripts/bootstrap.sh` with the pinned
//! `litellm[proxy]`), read their cases as JSON on stdin and print LiteLLM's answers as JSON.

use std::path::PathBuf;

use serde_json::Value;

/// The venv's Python (LiteLLM's, also boto3's); a missing venv is a failure that says how to
/// make it, never a skip.
pub fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/litellm-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/bootstrap.sh --postgres`, which makes LiteLLM's venv",
        python.display()
    );
    python
}

/// Runs `tests/parity/{script}` with `cases` on stdin; returns what it printed, as JSON.
pub async fn ask(script: &str, cases: Value) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/parity")
        .join(script);
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(python())
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run LiteLLM");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(cases.to_string().as_bytes())
            .expect("write the cases");
        child.wait_with_output().expect("LiteLLM's answers")
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "LiteLLM's harness failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("LiteLLM's answers are JSON")
}
