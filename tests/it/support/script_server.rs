//! Mock servers run as Python scripts from `tests/sdk` (the Bedrock runtime and STS, Google's
//! token endpoint, Azure's instance metadata service): each started with a directory of its own
//! (the files it is given, the `stats.json` it writes), its first stdout line (a JSON object:
//! its port, …) read, and killed when dropped.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// One running script.
pub struct ScriptServer {
    child: Child,
    files: tempfile::TempDir,
    started: Value,
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ScriptServer {
    /// Runs `tests/sdk/{script}` with `python`, after writing `files` (name, contents) into the
    /// server's directory, with the arguments `args` makes from that directory.
    pub fn start(
        python: PathBuf,
        script: &str,
        files: &[(&str, &str)],
        args: impl FnOnce(&Path) -> Vec<OsString>,
    ) -> ScriptServer {
        assert!(
            python.exists(),
            "{} is missing: run `bash scripts/bootstrap.sh --postgres`",
            python.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).expect("write a server's file");
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/sdk")
            .join(script);
        let mut child = Command::new(python)
            .arg(script)
            .args(args(dir.path()))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the mock server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the server's first line");
        let started = serde_json::from_str(&line).expect("the server's JSON line");
        ScriptServer {
            child,
            files: dir,
            started,
        }
    }

    /// What the server printed when it started.
    pub fn started(&self) -> &Value {
        &self.started
    }

    /// The port it printed.
    pub fn port(&self) -> u16 {
        self.started["port"].as_u64().expect("port") as u16
    }

    /// `name` in the server's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.files.path().join(name)
    }

    /// What the server wrote in its `stats.json`.
    pub fn stats(&self) -> Value {
        let text = std::fs::read_to_string(self.path("stats.json")).expect("stats");
        serde_json::from_str(&text).expect("stats JSON")
    }
}
