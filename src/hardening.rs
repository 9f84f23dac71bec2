//! Process hardening, applied first thing at start-up, before the config, the salt key or any
//! credential is read: the process is marked non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`) and its
//! core-file size limit is set to 0, soft and hard (`RLIMIT_CORE`).
//!
//! Non-dumpable, the kernel writes no core dump of the process, and refuses `ptrace` and
//! `/proc/PID/environ`, `mem`, `maps` and the like to any process without `CAP_SYS_PTRACE`,
//! including one running as the sidecar's own UID; the process's `/proc/PID/` entries belong to
//! root. The core limit closes the same door a second way (a hard limit of 0 cannot be raised
//! again without `CAP_SYS_RESOURCE`). Both survive the fork of `-d`; an `-u` upgrade is a new
//! process, which applies them again.
//!
//! Either call can be refused (a seccomp profile or sandbox that forbids `prctl`): the proxy runs
//! on, and the caller reports each failure as a warning once logging is set up.

use nix::sys::prctl;
use nix::sys::resource::{setrlimit, Resource};

/// Marks the process non-dumpable and sets its core-file limit to 0. Returns one message per
/// step that failed, naming the call and the error (none in the usual case).
pub fn apply() -> Vec<String> {
    let mut failures = Vec::new();
    if let Err(errno) = prctl::set_dumpable(false) {
        failures.push(format!(
            "process hardening: could not mark the process non-dumpable (prctl PR_SET_DUMPABLE: \
             {errno}); a core dump, or a process of the same UID, could read its memory"
        ));
    }
    if let Err(errno) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        failures.push(format!(
            "process hardening: could not set the core file size limit to 0 (setrlimit \
             RLIMIT_CORE: {errno}); a crash could write the keys to a core file"
        ));
    }
    failures
}

/// Logs each failure of [`apply`] as a warning (once the logger is set up).
pub fn log_failures(failures: &[String]) {
    for failure in failures {
        tracing::warn!("{failure}");
    }
}

/// Prints each failure of [`apply`] on stderr, for the commands that set up no logger.
pub fn print_failures(failures: &[String]) {
    for failure in failures {
        eprintln!("sidecar: warning: {failure}");
    }
}
