#!/usr/bin/env bash
# Load benchmark: direct vs the sidecar (a credential route and a `dispatch: model` route) vs
# nginx vs bare Pingora in one run, then 1,000 (and 1,500) concurrent streams through the sidecar. Installs what it needs (wrk and nginx from Debian, oha from
# crates.io), builds the release binaries, and prints a markdown report (also written to
# target/bench-load/results.md, beside results.json and a picture, results.svg). See
# benches/README.md.
#
#   bash benches/load.sh              # the full run (about 9 minutes after the build)
#   SMOKE=1 bash benches/load.sh      # seconds, tiny sizes, debug build: proves it still runs
#
# Extra arguments go to the driver (`python3 benches/load/driver.py --help`), e.g.
#   bash benches/load.sh --concurrency 1,64 --seconds 20 --response-bytes 16384
set -euo pipefail
cd "$(dirname "$0")/.."

OHA_VERSION=1.16.0

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v nginx >/dev/null || need_apt+=(nginx-light)
if ((${#need_apt[@]})); then
    echo "installing ${need_apt[*]} (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null; }
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v oha >/dev/null; then
    echo "installing oha $OHA_VERSION (crates.io; a few minutes once)"
    cargo install --locked --quiet oha --version "$OHA_VERSION"
fi

# 1,500 client connections plus 1,000 upstream ones, with room to spare.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

workdir="$PWD/target/bench-load"
rm -rf "$workdir" && mkdir -p "$workdir"

if [[ "${SMOKE:-}" == 1 ]]; then
    # The debug build `cargo test` already made (same features, no second BoringSSL build).
    cargo build --quiet --bin sidecar --example bench_provider --example bare_pingora
    bin=target/debug
    set -- --concurrency 1,4 --seconds 1 --warmup-seconds 1 --rounds 1 --rate 50 \
        --streams 20 --overflow-streams 30 --stream-ms 300 --stream-events 3 "$@"
else
    cargo build --quiet --release --bin sidecar --example bench_provider --example bare_pingora
    bin=target/release
fi

exec python3 benches/load/driver.py --workdir "$workdir" \
    --sidecar-bin "$bin/sidecar" --provider-bin "$bin/examples/bench_provider" \
    --bare-bin "$bin/examples/bare_pingora" "$@"
