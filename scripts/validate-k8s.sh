#!/usr/bin/env bash
# Validates the Kubernetes manifests under k8s/ offline, and every sidecar config shipped:
#   - every manifest against the Kubernetes OpenAPI schemas (kubernetes-validate, pinned, with
#     --strict so an unknown or misspelt field fails);
#   - every kustomization.yaml: each resource and each configMapGenerator file it lists exists,
#     and every file beside it is one of them (a file left out would silently not be applied);
#     the ConfigMaps its configMapGenerator makes, built here (name, a data key per file) and
#     validated like the manifests, with the name-suffix hash left on (so a change rolls the
#     pods); no hand-written ConfigMap holds a sidecar config; every ConfigMap a workload mounts
#     is a resource or a generator of the form. Rendered with `kubectl kustomize` and validated
#     again when kubectl happens to be installed (CI does not need it);
#   - each form's opt-in monitoring Component (k8s/<form>/monitoring/, kind Component, not
#     included by default): its PodMonitor against the keys of the Prometheus Operator's API
#     (the CRD is not among the Kubernetes schemas), its selector against the pod templates of
#     the form's sidecar workloads, each endpoint's port against the sidecar container's port
#     that is admin.address's in the config it reads; with kubectl, the form rendered with it;
#   - `sidecar -t` on every sidecar config a configMapGenerator lists, and on conf/gateway.yaml
#     (in a copy whose certificate paths and fan-out URL point at this machine: see
#     with_local_files in scripts/validate_k8s/configs.py).
#
# Prints one status line per check and exits 1 naming every file that failed.
# Needs: python3 (with venv; installed with apt-get when missing), openssl, the sidecar binary
# (${SIDECAR_BIN:-./target/debug/sidecar}, which `cargo test` builds), and PyPI for the first run.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0   # newest on PyPI when pinned; ships schemas up to 1.37
KUBERNETES_VERSION=1.30.0            # the oldest release the manifests support (preStop `sleep`)
SIDECAR_BIN=${SIDECAR_BIN:-./target/debug/sidecar}
venv=${XDG_CACHE_HOME:-$HOME/.cache}/sidecar-ci/venv-kubernetes-validate-$KUBERNETES_VALIDATE_VERSION

if [ ! -x "$SIDECAR_BIN" ]; then
  echo "validate-k8s: $SIDECAR_BIN not found; build it first (cargo test, or cargo build)" >&2
  exit 1
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_updated=""
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "validate-k8s: $* missing and no apt-get to install it with; install it and rerun" >&2
    exit 1
  fi
  echo "validate-k8s: installing $*" >&2
  if [ -z "$apt_updated" ]; then $sudo apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# Debian ships python3 without ensurepip; `python3 -m venv` needs python3-venv.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  apt_install python3 python3-venv
fi
command -v openssl >/dev/null 2>&1 || apt_install openssl

# The venv is reused across runs; a marker tells a complete install from an interrupted one, and
# a venv whose Python went away (a system upgrade) is rebuilt. PyYAML comes with
# kubernetes-validate (a dependency of it).
if [ ! -f "$venv/.installed" ] || ! "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1; then
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  touch "$venv/.installed"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" scripts/validate_k8s "$KUBERNETES_VERSION" "$SIDECAR_BIN" \
  "$venv/bin/kubernetes-validate" "$work"
