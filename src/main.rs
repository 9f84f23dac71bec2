//! The `sidecar` binary: everything lives in the library; see `sidecar --help`.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

/// jemalloc instead of glibc malloc: see `benches/README.md` for what it changed under load.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    sidecar::cli::main()
}
