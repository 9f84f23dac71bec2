//! The `sidecar` binary: everything lives in the library; see `sidecar --help`.

fn main() -> std::process::ExitCode {
    sidecar::cli::main()
}
