#!/usr/bin/env bash
# Validates the Kubernetes manifests under k8s/ offline, and every sidecar config shipped:
#   - every manifest against the Kubernetes OpenAPI schemas (kubernetes-validate, pinned, with
#     --strict so an unknown or misspelt field fails);
#   - every kustomization.yaml: each resource it lists exists, and each manifest beside it is
#     listed (a file left out would silently not be applied); rendered with `kubectl kustomize`
#     and validated again when kubectl happens to be installed (CI does not need it);
#   - `sidecar -t` on every sidecar config embedded in a ConfigMap, and on conf/gateway.yaml.
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

"$venv/bin/python" - "$KUBERNETES_VERSION" "$SIDECAR_BIN" "$venv/bin/kubernetes-validate" "$work" <<'PY'
import os, pathlib, shutil, subprocess, sys
import yaml

k8s_version, sidecar, validator, work = sys.argv[1:5]
work = pathlib.Path(work)
failed = []  # the files that failed, in order


def report(ok, what, detail="", output=""):
    print(f"{'ok  ' if ok else 'FAIL'}  {what}{f' ({detail})' if detail else ''}")
    for line in output.strip().splitlines():
        print(f"        {line}")
    sys.stdout.flush()
    if not ok:
        failed.append(what.split(" ")[0].split(":")[0])


def run(cmd, **kwargs):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)
        return p.returncode, (p.stdout + p.stderr)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, str(e)


def schema_check(path, label=None):
    rc, out = run([validator, "-k", k8s_version, "--strict", str(path)])
    # Only warnings and errors are worth repeating (kubernetes-validate prints an INFO per object).
    noise = [l.replace(str(path), label or str(path)) for l in out.splitlines()
             if not l.startswith("INFO ")]
    report(rc == 0, label or str(path), f"schema, Kubernetes {k8s_version}", "\n".join(noise))


def is_sidecar_config(doc):
    return isinstance(doc, dict) and "credential_list" not in doc and (
        "listeners" in doc or "routes" in doc)


# Dummy values, for `sidecar -t` only: the configs read the salt key and the database URL from
# the environment. Port 1 on loopback refuses at once; -t reports an unreachable database as a
# warning (the sidecar starts without it too), so nothing leaves the machine.
test_env = dict(os.environ,
                LITELLM_SALT_KEY="validate-k8s-dummy-salt-key",
                DATABASE_URL="postgresql://validate:validate@127.0.0.1:1/validate?sslmode=disable")


def sidecar_check(config, label):
    rc, out = run([sidecar, "-t", "-c", str(config)], env=test_env)
    summary = next((l for l in out.splitlines() if "configuration is valid" in l), "")
    detail = "sidecar -t" + (f": {summary.split(': ', 1)[-1]}" if rc == 0 and summary else "")
    report(rc == 0, label, detail, "" if rc == 0 else out)


# `sidecar -t` reads the listener certificates (a missing file is an error), and the paths in
# the manifests are where Kubernetes mounts the TLS Secret, which does not exist here. So the
# extracted copy (never the manifest) gets its missing listener cert/key/client_ca paths
# pointed at a throwaway self-signed pair made for this run.
_pair = []


def throwaway_pair():
    if not _pair:
        crt, key = work / "throwaway.crt", work / "throwaway.key"
        rc, out = run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                       "-subj", "/CN=validate-k8s", "-keyout", str(key), "-out", str(crt)])
        if rc != 0:
            raise RuntimeError(f"openssl could not make a throwaway certificate: {out}")
        _pair.extend([crt, key])
    return _pair


def with_local_tls(text, doc):
    replacements = {}
    for listener in doc.get("listeners") or []:
        tls = listener.get("tls") if isinstance(listener, dict) else None
        if not isinstance(tls, dict):
            continue
        for field in ("cert", "key", "client_ca"):
            path = tls.get(field)
            if isinstance(path, str) and os.path.isabs(path) and not os.path.exists(path):
                crt, key = throwaway_pair()
                replacements[path] = str(key if field == "key" else crt)
    for old in sorted(replacements, key=len, reverse=True):
        text = text.replace(old, replacements[old])
    return text


manifests = sorted(p for p in pathlib.Path("k8s").rglob("*") if p.suffix in (".yaml", ".yml"))
configmaps = 0
for path in manifests:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        report(False, str(path), "YAML", str(e))
        continue

    if path.name in ("kustomization.yaml", "kustomization.yml"):
        # Not a Kubernetes object: check what it lists instead.
        k = docs[0] if docs else {}
        listed = [r for r in k.get("resources") or []]
        problems = [f"listed but missing: {r}" for r in listed if not (path.parent / r).exists()]
        here = {p.name for p in path.parent.iterdir()
                if p.suffix in (".yaml", ".yml") and p.name != path.name}
        problems += [f"not listed in resources: {f}" for f in sorted(here - set(listed))]
        report(not problems, str(path), f"kustomization, {len(listed)} resources", "\n".join(problems))
        if shutil.which("kubectl"):
            rendered = work / f"kustomize-{path.parent.name}.yaml"
            rc, out = run(["kubectl", "kustomize", str(path.parent)])
            if rc != 0:
                report(False, f"{path} (kubectl kustomize)", "", out)
            else:
                rendered.write_text(out)
                schema_check(rendered, f"{path.parent}/ rendered by kubectl kustomize")
        else:
            print(f"skip  {path.parent}/ rendered (kubectl not installed; files checked one by one)")
        continue

    schema_check(path)

    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "ConfigMap":
            continue
        data = doc.get("data") or {}
        name = (doc.get("metadata") or {}).get("name", "?")
        configs = []
        for key, text in data.items():
            if not key.endswith((".yaml", ".yml")):
                continue
            try:
                parsed = yaml.safe_load(text)
            except yaml.YAMLError as e:
                report(False, f"{path}: ConfigMap {name} {key}", "YAML", str(e))
                continue
            if is_sidecar_config(parsed):
                configs.append((key, text, parsed))
        if not configs:
            continue
        # Every key of the ConfigMap, side by side as in the mounted volume, so companion files
        # a config names relatively (a local credential store) are found.
        configmaps += 1
        folder = work / f"configmap-{configmaps}"
        folder.mkdir()
        for key, text in data.items():
            (folder / key).write_text(text)
        for key, text, parsed in configs:
            (folder / key).write_text(with_local_tls(text, parsed))
            sidecar_check(folder / key, f"{path}: ConfigMap {name} {key}")

for path in sorted(pathlib.Path("conf").glob("*.y*ml")):
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        report(False, str(path), "YAML", str(e))
        continue
    if is_sidecar_config(doc):
        sidecar_check(path, str(path))
    else:
        print(f"skip  {path} (not a gateway config: read through the config that names it)")

if failed:
    print(f"validate-k8s: FAILED: {', '.join(dict.fromkeys(failed))}")
    sys.exit(1)
print("validate-k8s: all checks passed")
PY
