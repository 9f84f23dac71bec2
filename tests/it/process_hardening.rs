//! Process hardening at start-up: the running sidecar is not dumpable and its core-file limit is
//! 0 (soft and hard), so neither a core dump nor another process of the sidecar's own UID (without
//! `CAP_SYS_PTRACE`) can read the keys it holds.
//!
//! The dumpable flag is not printed anywhere in `/proc/PID/`; it shows from outside in two ways,
//! both checked: the kernel hands a non-dumpable process's `/proc/PID/` entries to root, and
//! refuses `/proc/PID/environ` to a process of the same UID that lacks `CAP_SYS_PTRACE`. Both
//! need the sidecar to run as a UID other than root: as root the test runs it as `nobody`. The
//! readiness probe, which reads the process's own `/proc/self/fd`, must keep working.
//!
//! A sandbox may refuse either call: a preloaded shim (compiled here with `cc`, which building
//! BoringSSL needs anyway) makes both fail, and the sidecar must warn and serve on.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use serde_json::json;

use crate::support::config::{gateway, local_credentials, route, yaml};
use crate::support::gateway::{credentials_yaml, SALT_KEY};
use crate::support::http::admin_get;
use crate::support::sidecar_process::SidecarProcess;

/// `nobody`, the user the sidecar runs as when the tests run as root.
const NOBODY: u32 = 65534;

/// This test process's effective UID, from the `Uid:` line of `/proc/self/status`.
fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("a Uid: line");
    let effective = line.split_whitespace().nth(1).expect("the effective UID");
    effective.parse().expect("a number")
}

/// The soft and hard values of `Max core file size` in `/proc/PID/limits`.
fn core_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max core file size"))
        .unwrap_or_else(|| panic!("no core line in:\n{limits}"));
    let mut fields = line.split_whitespace();
    let soft = fields.next().expect("soft").to_string();
    let hard = fields.next().expect("hard").to_string();
    (soft, hard)
}

#[tokio::test]
async fn the_running_sidecar_is_not_dumpable_and_writes_no_core() {
    let _turn = crate::support::lock::shared().await;
    let uid = effective_uid();
    // As root, run the sidecar as another user: a root-owned `/proc/PID/` would show nothing.
    let run_as = (uid == 0).then_some(NOBODY);
    let sidecar_uid = run_as.unwrap_or(uid);
    let upstream = "https://127.0.0.1:9";
    let mut config = gateway(
        json!({}),
        local_credentials(),
        vec![route("openai", upstream, "openai", "openai-cred")],
    );
    // Nothing to drain when it stops.
    config["server"]["grace_period"] = json!("100ms");
    config["server"]["graceful_shutdown_timeout"] = json!("1s");
    let mut sidecar = SidecarProcess::try_start_as(
        &yaml(&config),
        &[("credentials.yaml", &credentials_yaml())],
        &[("LITELLM_SALT_KEY", SALT_KEY)],
        run_as,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pid = sidecar.pid();

    assert_eq!(
        core_limits(pid),
        ("0".to_string(), "0".to_string()),
        "Max core file size (soft, hard)"
    );

    let owner = std::fs::metadata(format!("/proc/{pid}/status"))
        .expect("stat /proc/PID/status")
        .uid();
    assert_eq!(
        owner, 0,
        "the kernel gives a non-dumpable process's /proc entries to root; this one's belong to \
         UID {owner} (the sidecar runs as {sidecar_uid})"
    );

    // A process of the sidecar's own UID, without capabilities, tries to read its environment
    // (which holds the salt key).
    let mut cat = Command::new("cat");
    cat.arg(format!("/proc/{pid}/environ"));
    if let Some(uid) = run_as {
        cat.uid(uid).gid(uid);
    }
    let read = cat.output().expect("run cat");
    let environ = String::from_utf8_lossy(&read.stdout);
    assert!(
        !read.status.success() && !environ.contains(SALT_KEY),
        "UID {sidecar_uid} read the sidecar's environment ({} bytes, salt key included: {})",
        read.stdout.len(),
        environ.contains(SALT_KEY)
    );
    assert!(
        String::from_utf8_lossy(&read.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );

    // Readiness reads the process's own `/proc/self/fd`, which stays open to it as a
    // non-dumpable process of a UID other than root.
    let (status, body) = admin_get(&sidecar, "/readyz").await;
    assert_eq!(status, 200, "{body}");

    assert!(sidecar.stop().success(), "{}", sidecar.output());
    let output = sidecar.output();
    assert!(
        !output.contains("process hardening"),
        "no hardening warning expected here:\n{output}"
    );
}

/// A shared object that makes `prctl(PR_SET_DUMPABLE, …)` and `setrlimit(RLIMIT_CORE, …)` fail
/// with EPERM, as a sandbox forbidding them would, and passes every other call to the kernel.
const REFUSING_SHIM: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SHIM_PR_SET_DUMPABLE 4
#define SHIM_RLIMIT_CORE 4

int prctl(int option, ...) {
    va_list ap;
    va_start(ap, option);
    unsigned long a2 = va_arg(ap, unsigned long), a3 = va_arg(ap, unsigned long);
    unsigned long a4 = va_arg(ap, unsigned long), a5 = va_arg(ap, unsigned long);
    va_end(ap);
    if (option == SHIM_PR_SET_DUMPABLE) { errno = EPERM; return -1; }
    return syscall(SYS_prctl, option, a2, a3, a4, a5);
}

static int limit(int resource, const void *rlim) {
    if (resource == SHIM_RLIMIT_CORE) { errno = EPERM; return -1; }
    return syscall(SYS_prlimit64, 0, resource, rlim, NULL);
}
int setrlimit(int resource, const void *rlim) { return limit(resource, rlim); }
int setrlimit64(int resource, const void *rlim) { return limit(resource, rlim); }
"#;

#[tokio::test]
async fn a_refused_hardening_call_is_a_warning_and_the_sidecar_serves_on() {
    let _turn = crate::support::lock::shared().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("refuse.c");
    let shim = dir.path().join("refuse.so");
    std::fs::write(&source, REFUSING_SHIM).expect("write the shim");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&shim)
        .arg(&source)
        .output()
        .expect("run cc (a C compiler is needed to build BoringSSL too)");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    let mut config = gateway(
        json!({}),
        local_credentials(),
        vec![route(
            "openai",
            "https://127.0.0.1:9",
            "openai",
            "openai-cred",
        )],
    );
    config["server"]["grace_period"] = json!("100ms");
    config["server"]["graceful_shutdown_timeout"] = json!("1s");
    let shim = shim.to_str().expect("UTF-8 path");
    let sidecar = SidecarProcess::start_async(
        &yaml(&config),
        &[("credentials.yaml", &credentials_yaml())],
        &[("LITELLM_SALT_KEY", SALT_KEY), ("LD_PRELOAD", shim)],
    )
    .await;
    for warning in [
        "process hardening: could not mark the process non-dumpable (prctl PR_SET_DUMPABLE: EPERM",
        "process hardening: could not set the core file size limit to 0 (setrlimit RLIMIT_CORE: \
         EPERM",
    ] {
        assert!(
            sidecar.wait_for_output(warning).await,
            "{warning}:\n{}",
            sidecar.output()
        );
    }
    let (status, body) = admin_get(&sidecar, "/readyz").await;
    assert_eq!(status, 200, "{body}");
}
