#!/usr/bin/env bash
# Installs what building sidecar needs on a fresh Debian/Ubuntu machine, and nothing when it is
# already there: BoringSSL (built from source by the `boring` crate) needs cmake, a C/C++
# compiler and, for bindgen, clang + libclang.
#
# With --postgres (the tests need it): makes sure a PostgreSQL server answers on 127.0.0.1:5432
# with a `test` database the `postgres` user reaches without a password. A running server is
# used as it is; an installed but stopped one is started; a missing one is installed with apt
# and set up for local trust authentication. It also makes the Python environment the SDK tests
# run the real OpenAI SDK from: target/sdk-venv, with the pinned `openai` package (from PyPI);
# and the one the LiteLLM parity tests run the real LiteLLM from: target/litellm-venv, with the
# pinned `litellm[proxy]` (and `prisma`, which LiteLLM's proxy imports; no Prisma engine is
# downloaded or run); and target/google-venv, with the pinned `google-auth` the Vertex AI test's
# token endpoint checks grants with.
set -euo pipefail

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_updated=""
apt_install() {
  echo "bootstrap: installing $*" >&2
  if [ -z "$apt_updated" ]; then $sudo apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

if ! command -v cargo >/dev/null 2>&1; then
  echo "bootstrap: cargo not found; install Rust (stable) from your distribution or rustup" >&2
  exit 1
fi

[ "${1:-}" = "--postgres" ] || exit 0

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! ready; then
  installed_here=""
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql postgresql-client
    installed_here=1
  fi
  version=$(ls /etc/postgresql | sort -n | tail -n 1)
  if [ -n "$installed_here" ]; then
    # A fresh server: let local tests in without a password, as on the development machines.
    hba=/etc/postgresql/$version/main/pg_hba.conf
    $sudo sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  $sudo pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do ready && break; sleep 1; done
  if ! ready; then
    echo "bootstrap: PostgreSQL is not answering on 127.0.0.1:5432 and could not be started" >&2
    exit 1
  fi
fi
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atqc "select 1" >/dev/null 2>&1; then
  echo "bootstrap: PostgreSQL answers but user postgres cannot log in from 127.0.0.1 without a password" >&2
  exit 1
fi
if [ "$(psql -h 127.0.0.1 -U postgres -d postgres -Atqc "select count(*) from pg_database where datname = 'test'")" = "0" ]; then
  psql -h 127.0.0.1 -U postgres -d postgres -qc "create database test" >/dev/null
fi

# The SDK tests (tests/it/openai_sdk.rs) run the real OpenAI Python SDK from a venv of their own.
OPENAI_SDK_VERSION=3.60.0
venv="$(cd "$(dirname "$0")/.." && pwd)/target/sdk-venv"
if ! "$venv/bin/python" -c "import openai" >/dev/null 2>&1; then
  command -v python3 >/dev/null 2>&1 || apt_install python3
  python3 -m venv "$venv" >/dev/null 2>&1 || { apt_install python3-venv; rm -rf "$venv"; python3 -m venv "$venv"; }
  echo "bootstrap: installing openai==$OPENAI_SDK_VERSION into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "openai==$OPENAI_SDK_VERSION"
fi

# The Vertex AI test (tests/it/vertex.rs) runs a token endpoint that checks each JWT-bearer grant
# with google-auth's own decoder, and the Anthropic SDK's Vertex client, from a venv of their own;
# the Bedrock test (tests/it/bedrock.rs) the same SDK's Bedrock client, which signs with boto3.
GOOGLE_AUTH_VERSION=2.62.2
ANTHROPIC_SDK_VERSION=2.17.0
BOTO3_VERSION=1.44.18
venv="$(cd "$(dirname "$0")/.." && pwd)/target/google-venv"
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys, cryptography; sys.exit(m.version('google-auth') != '$GOOGLE_AUTH_VERSION' or m.version('anthropic') != '$ANTHROPIC_SDK_VERSION' or m.version('boto3') != '$BOTO3_VERSION')" >/dev/null 2>&1; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  echo "bootstrap: installing google-auth[cryptography]==$GOOGLE_AUTH_VERSION, anthropic==$ANTHROPIC_SDK_VERSION and boto3==$BOTO3_VERSION into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "google-auth[cryptography]==$GOOGLE_AUTH_VERSION" "anthropic==$ANTHROPIC_SDK_VERSION" \
    "boto3==$BOTO3_VERSION"
fi

# The LiteLLM parity tests (tests/it/litellm_parity.rs) ask the real LiteLLM package, in a venv
# of its own (its pins differ from the SDK's), how LiteLLM answers the same input. The Bedrock
# test (tests/it/bedrock.rs) runs boto3 from the same venv: its client, and a mock provider
# verifying signatures with botocore (BOTO3_VERSION above: the version litellm[proxy] resolves
# to, pinned).
LITELLM_VERSION=1.106.2
PRISMA_VERSION=0.15.0
venv="$(cd "$(dirname "$0")/.." && pwd)/target/litellm-venv"
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$LITELLM_VERSION' or m.version('boto3') != '$BOTO3_VERSION')" >/dev/null 2>&1; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  echo "bootstrap: installing litellm[proxy]==$LITELLM_VERSION and boto3==$BOTO3_VERSION into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "litellm[proxy]==$LITELLM_VERSION" "prisma==$PRISMA_VERSION" "boto3==$BOTO3_VERSION"
fi
