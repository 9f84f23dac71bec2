#!/usr/bin/env bash
# Fleet benchmark: many real sidecar processes against one PostgreSQL, counting what the
# database pays (connections, CPU while idle) and how long a credential UPDATE takes to reach
# every instance; direct (every instance reads the database) and fan-out (one serving instance
# reads it, the others watch it), each with and without NOTIFY. Prints a markdown report (also
# written to target/bench-fleet/results.md). See benches/README.md, "Fleet benchmark".
#
#   bash benches/fleet.sh                      # N = 50 and 200 (about 15 minutes after the build)
#   bash benches/fleet.sh --smoke              # N = 3, tiny table, debug build: well under a minute
#   SMOKE=1 bash benches/fleet.sh              # the same
#
# Extra arguments go to the driver (`python3 benches/fleet/driver.py --help`), e.g.
#   bash benches/fleet.sh --sizes 50 --forms direct --rows 20000 --refresh 2
#   bash benches/fleet.sh --bin /path/to/sidecar   # no build: use that binary
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=""
bin=""
args=()
while (($#)); do
    case "$1" in
        --smoke) smoke=1 ;;
        --bin) bin="$2"; shift ;;
        --bin=*) bin="${1#--bin=}" ;;
        *) args+=("$1") ;;
    esac
    shift
done
[[ "${SMOKE:-}" == 1 ]] && smoke=1

# PostgreSQL on 127.0.0.1:5432 with a `test` database (started or installed when missing).
bash scripts/bootstrap.sh --postgres
command -v psql >/dev/null || { echo "fleet.sh: psql not found" >&2; exit 1; }

# 200 instances, each with a handful of sockets and files, plus the driver's log handles.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

workdir="$PWD/target/bench-fleet"
rm -rf "$workdir" && mkdir -p "$workdir"

if [[ -z "$bin" ]]; then
    if [[ -n "$smoke" ]]; then
        # The debug build `cargo test` already made. Naming an example keeps the dev-dependencies'
        # feature unification, so nothing (BoringSSL above all) is built a second time.
        cargo build --quiet --bin sidecar --example bench_provider
        bin=target/debug/sidecar
    else
        cargo build --quiet --release --bin sidecar
        bin=target/release/sidecar
    fi
fi

exec python3 benches/fleet/driver.py --workdir "$workdir" --bin "$bin" \
    ${smoke:+--smoke} ${args[@]+"${args[@]}"}
