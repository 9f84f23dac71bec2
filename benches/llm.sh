#!/usr/bin/env bash
# LLM-shaped load benchmark (issue 28): 300 KB prompts with half the answers streamed (c=32), then
# 1,000 streams of 100 chunks 50 ms apart held at once, through nginx, bare Pingora, the sidecar's
# credential route, its `dispatch: model` route with LiteLLM keys (PostgreSQL on 127.0.0.1:5432)
# and the LiteLLM proxy (target/litellm-venv, from scripts/bootstrap.sh; left out, with the reason
# printed, when absent), every proxy pinned to CPU 0 and everything else to CPU 1. Prints a
# markdown report (also target/bench-llm/results.md, beside results.json and results.svg). See
# benches/README.md.
#
#   bash benches/llm.sh              # the full run (about 6 minutes after the build)
#   SMOKE=1 bash benches/llm.sh      # seconds, tiny sizes, debug build: proves it still runs
#
# Extra arguments go to the driver (`python3 benches/load/llm.py --help`), e.g.
#   bash benches/llm.sh --streams 2000 --litellm-streams 100 --no-litellm
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v nginx >/dev/null || need_apt+=(nginx-light)
command -v psql >/dev/null || need_apt+=(postgresql-client)
if ((${#need_apt[@]})); then
    echo "installing ${need_apt[*]} (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null; }
fi
if (( $(nproc) < 2 )); then
    echo "the LLM benchmark pins the proxies and the clients to two different CPUs: $(nproc) here" >&2
    exit 1
fi

# 1,000 client connections plus 1,000 upstream ones per proxy, with room to spare.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

workdir="$PWD/target/bench-llm"
rm -rf "$workdir" && mkdir -p "$workdir"
examples=(--example bench_provider --example bare_pingora --example stream_client)

if [[ "${SMOKE:-}" == 1 ]]; then
    # The debug build `cargo test` already made (same features, no second BoringSSL build).
    cargo build --quiet --bin sidecar "${examples[@]}"
    bin=target/debug
    set -- --request-bytes 20000 --concurrency 2 --seconds 1 --warmup-seconds 1 --rounds 1 \
        --answer-chunks 3 --streams 10 --chunks 5 --chunk-ms 20 --ramp-ms 50 \
        --litellm-streams 3 "$@"
else
    cargo build --quiet --release --bin sidecar "${examples[@]}"
    bin=target/release
fi

exec python3 benches/load/llm.py --workdir "$workdir" --release "$bin" "$@"
