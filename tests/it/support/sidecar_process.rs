//! Runs the real `sidecar` binary as a child process: owns its temp config directory,
//! environment scrubbing, stdout/stderr capture, readiness polling, and shutdown.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Environment variables removed from the child unless the test passes them explicitly.
pub const SCRUBBED_ENV: &[&str] = &[
    "LITELLM_SALT_KEY",
    "LITELLM_MASTER_KEY",
    "SSL_CERT_FILE",
    "RUST_LOG",
    "SIDECAR_CONFIG",
    // A developer's own collector must not receive the tests' spans (tests/it/otlp.rs).
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
];

/// How long [`SidecarProcess::start`] waits for the listener to accept TCP connections.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);

/// How long [`SidecarProcess::stop`] waits after SIGTERM before SIGKILL.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

const POLL: Duration = Duration::from_millis(20);

/// A running `sidecar -c <dir>/gateway.yaml`; killed on drop.
pub struct SidecarProcess {
    child: Child,
    dir: TempDir,
    port: u16,
    admin_port: u16,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl SidecarProcess {
    /// Writes `config_yaml` to `gateway.yaml` (and each `(file_name, contents)` of
    /// `extra_files`) in a fresh temp dir, spawns the binary there with `env`, and waits until
    /// `listen_addr()` accepts TCP. In every written file `{PORT}` becomes the chosen free port
    /// and `{DIR}` the temp dir path; `{ADMIN_PORT}` a second free port, on which an `admin:`
    /// listener is added when the config has none (parallel tests must not share 9901). Panics with the captured output on exit or timeout.
    ///
    /// This blocks the calling thread; inside a current-thread tokio test whose runtime also
    /// drives a `MockProvider`, prefer [`SidecarProcess::start_async`].
    /// A port picked by [`super::free_port`] can be taken by a parallel test before the sidecar
    /// binds it; such a start is tried again (at most three times) on fresh ports.
    pub fn start(config_yaml: &str, extra_files: &[(&str, &str)], env: &[(&str, &str)]) -> Self {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match Self::try_start(config_yaml, extra_files, env) {
                Ok(process) => return process,
                Err(e) if attempts < 3 && e.contains("in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// [`SidecarProcess::start`] on a blocking thread, so the caller's runtime keeps running.
    pub async fn start_async(
        config_yaml: &str,
        extra_files: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Self {
        let config = config_yaml.to_string();
        let files = owned_pairs(extra_files);
        let env = owned_pairs(env);
        let joined = tokio::task::spawn_blocking(move || {
            Self::start(&config, &borrowed_pairs(&files), &borrowed_pairs(&env))
        })
        .await;
        match joined {
            Ok(process) => process,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Like [`SidecarProcess::start`] but returns `Err(message with captured output)` when the
    /// process exits before becoming ready or the deadline passes (e.g. to test bad configs).
    pub fn try_start(
        config_yaml: &str,
        extra_files: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        Self::try_start_as(config_yaml, extra_files, env, None)
    }

    /// [`SidecarProcess::try_start`], the binary running as the user and group `uid` when one is
    /// given (the test must run as root then); its temp dir is handed to that user.
    pub fn try_start_as(
        config_yaml: &str,
        extra_files: &[(&str, &str)],
        env: &[(&str, &str)],
        uid: Option<u32>,
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("create sidecar temp dir");
        if let Some(uid) = uid {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).expect("chown temp dir");
        }
        let port = super::free_port();
        let admin_port = super::free_port();
        let fill = |text: &str| {
            text.replace("{PORT}", &port.to_string())
                .replace("{ADMIN_PORT}", &admin_port.to_string())
                .replace("{DIR}", &dir.path().display().to_string())
        };
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, fill(&with_admin(config_yaml))).expect("write gateway.yaml");
        for (name, contents) in extra_files {
            let path = dir.path().join(name);
            std::fs::write(&path, fill(contents))
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }

        let mut cmd = command(env);
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        cmd.arg("-c")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn sidecar binary");
        let output = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            spawn_reader(child.stdout.take().expect("child stdout"), output.clone()),
            spawn_reader(child.stderr.take().expect("child stderr"), output.clone()),
        ];
        let mut process = SidecarProcess {
            child,
            dir,
            port,
            admin_port,
            output,
            readers,
        };
        // Pingora binds each service's listeners on its own: wait for the admin one too when
        // this harness added it (a test's own admin address may be meant to stay unbound).
        let added_admin = !has_admin(config_yaml);
        process.wait_ready(added_admin)?;
        Ok(process)
    }

    fn wait_ready(&mut self, with_admin: bool) -> Result<(), String> {
        let admin = SocketAddr::from(([127, 0, 0, 1], self.admin_port));
        // A port picked by `free_port` can be bound by another test's process first: that one
        // would answer in the child's place (and the child exit, "in use"), so the listening
        // socket must be the child's own.
        let pid = self.child.id();
        let accepts = |addr: &SocketAddr| {
            TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok()
                && listens(pid, addr.port())
        };
        let end = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait sidecar") {
                self.join_readers();
                return Err(format!(
                    "sidecar exited before listening ({status}); output:\n{}",
                    self.output()
                ));
            }
            if accepts(&self.listen_addr()) && (!with_admin || accepts(&admin)) {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(format!(
                    "sidecar not listening on {} after {READY_DEADLINE:?}; output:\n{}",
                    self.listen_addr(),
                    self.output()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// `127.0.0.1:PORT`, the address substituted for `{PORT}`.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:ADMIN_PORT`, the admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.listen_addr())
    }

    /// The temp dir holding `gateway.yaml` and the extra files (also the child's cwd).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Child stdout and stderr captured so far (interleaved as read, lossily UTF-8).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().expect("output lock")).into_owned()
    }

    /// Exit status if the child has already exited.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait sidecar")
    }

    /// Waits (up to 5 s) until the captured output contains `needle`: lines written after a
    /// response (access lines, refusals) reach the pipe readers a moment later.
    pub async fn wait_for_output(&self, needle: &str) -> bool {
        super::wait_until(Duration::from_secs(5), || self.output().contains(needle)).await
    }

    /// Sends a signal by name (`"HUP"`, `"QUIT"`, `"TERM"`) and returns at once.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{name} failed");
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, waits up to 10 s for exit, then SIGKILLs; returns the exit status.
    /// After this returns, [`SidecarProcess::output`] holds everything the child printed.
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.try_exit_status() {
            self.join_readers();
            return status;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + STOP_DEADLINE;
        let status = loop {
            if let Some(status) = self.try_exit_status() {
                break status;
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                break self.child.wait().expect("wait killed sidecar");
            }
            std::thread::sleep(POLL);
        };
        self.join_readers();
        status
    }

    /// Waits (bounded, in case a grandchild keeps a pipe open) for the pipe readers to drain.
    fn join_readers(&mut self) {
        let end = Instant::now() + Duration::from_secs(5);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < end {
            std::thread::sleep(POLL);
        }
        for reader in self.readers.drain(..) {
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
    }

    /// Runs the binary once with `args` (and `stdin` piped in, if given), env scrubbed as for
    /// [`SidecarProcess::start`] apart from `env`, and returns its complete output.
    pub fn run_cli(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
        let mut cmd = command(env);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn sidecar binary");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("child stdin");
            let input = input.to_string();
            // Write from a thread so a child that fills stdout before reading cannot deadlock.
            std::thread::spawn(move || {
                let _ = pipe.write_all(input.as_bytes());
            });
        }
        child.wait_with_output().expect("wait for sidecar CLI")
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether `config_yaml` configures the admin listener itself.
fn has_admin(config_yaml: &str) -> bool {
    config_yaml.lines().any(|l| l.starts_with("admin:"))
}

/// `config_yaml` with an admin listener on `{ADMIN_PORT}` unless it configures one itself.
/// Appended as text: the harness also starts configs that are not valid YAML on purpose.
fn with_admin(config_yaml: &str) -> String {
    if has_admin(config_yaml) {
        config_yaml.to_string()
    } else {
        config_yaml.to_string() + "\nadmin: { address: \"127.0.0.1:{ADMIN_PORT}\" }\n"
    }
}

/// A `Command` for the sidecar binary with [`SCRUBBED_ENV`] removed, then `env` applied.
pub fn command(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sidecar"));
    for name in SCRUBBED_ENV {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().copied());
    cmd
}

fn spawn_reader<R: Read + Send + 'static>(
    mut pipe: R,
    sink: Arc<Mutex<Vec<u8>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("output lock")
                .extend_from_slice(&buf[..n]);
        }
    })
}

fn owned_pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn borrowed_pairs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect()
}

/// Whether process `pid` holds a socket listening on `port` (from `/proc/net/tcp{,6}` and the
/// process's descriptors). `true` when they cannot be read: then nobody can tell.
fn listens(pid: u32, port: u16) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return true;
    };
    let mut tables = String::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match std::fs::read_to_string(table) {
            Ok(text) => tables += &text,
            Err(_) => return true,
        }
    }
    let port = format!(":{port:04X}");
    let sockets: Vec<String> = tables
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Field 1 is the local address, 3 the state (0A: LISTEN), 9 the socket's inode.
            let local = fields.get(1).is_some_and(|a| a.ends_with(&port));
            let listening = local && fields.get(3) == Some(&"0A");
            listening.then(|| format!("socket:[{}]", fields.get(9).unwrap_or(&"")))
        })
        .collect();
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| sockets.iter().any(|s| target.as_os_str() == s.as_str()))
}
