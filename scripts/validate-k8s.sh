#!/usr/bin/env bash
# Validates the Kubernetes manifests under k8s/ offline, and every sidecar config shipped:
#   - every manifest against the Kubernetes OpenAPI schemas (kubernetes-validate, pinned, with
#     --strict so an unknown or misspelt field fails);
#   - every kustomization.yaml: each resource it lists exists, and each manifest beside it is
#     listed (a file left out would silently not be applied); rendered with `kubectl kustomize`
#     and validated again when kubectl happens to be installed (CI does not need it);
#   - `sidecar -t` on every sidecar config embedded in a ConfigMap, and on conf/gateway.yaml
#     (in a copy whose certificate paths and fan-out URL point at this machine: see
#     with_local_files below).
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
import ipaddress, os, pathlib, re, shutil, subprocess, sys
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


def dig(doc, *keys):
    """doc[k1][k2]…, or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def is_sidecar_config(doc):
    return isinstance(doc, dict) and "credential_list" not in doc and (
        "listeners" in doc or "routes" in doc)


# Dummy values, for `sidecar -t` only: the configs read the salt key, the database URL and a
# watcher's token from the environment. Port 1 on loopback refuses at once; -t reports an
# unreachable database or fan-out server as a warning (the sidecar starts without them too), so
# nothing leaves the machine.
LOOPBACK_REFUSED = "127.0.0.1:1"
test_env = dict(os.environ,
                LITELLM_SALT_KEY="validate-k8s-dummy-salt-key",
                DATABASE_URL=f"postgresql://validate:validate@{LOOPBACK_REFUSED}/validate?sslmode=disable",
                SIDECAR_WATCH_TOKEN="validate-k8s-dummy-watch-token")


def sidecar_check(config, label, doc=None, rewritten=()):
    env = test_env
    # A watcher whose token lives in another variable (credentials.watch.token_env) gets the
    # dummy there too: -t refuses a watch source whose token variable is unset.
    token_env = dig(doc, "credentials", "watch", "token_env")
    if isinstance(token_env, str) and token_env and token_env not in env:
        env = dict(env, **{token_env: test_env["SIDECAR_WATCH_TOKEN"]})
    rc, out = run([sidecar, "-t", "-c", str(config)], env=env)
    summary = next((l for l in out.splitlines() if "configuration is valid" in l), "")
    detail = "sidecar -t" + (f": {summary.split(': ', 1)[-1]}" if rc == 0 and summary else "")
    if rc != 0 and rewritten:
        out = out.rstrip() + "\n(checked in a copy where " + "; ".join(rewritten) + ")"
    report(rc == 0, label, detail, "" if rc == 0 else out)


# `sidecar -t` reads the certificates and CA bundles a config names (a missing file is an
# error), and the paths in the manifests are where Kubernetes mounts Secrets and ConfigMaps,
# which do not exist here. So the extracted copy (never the manifest) gets those paths pointed
# at a throwaway self-signed pair made for this run.
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


# The file paths that may name a mounted Secret or ConfigMap, as (holders, fields): holders maps
# the parsed config to the mappings that may hold those fields. A field ending in "key" gets the
# throwaway key, every other one the throwaway certificate (which serves as a CA bundle too).
def _listener_tls(doc):
    return [dig(l, "tls") for l in (dig(doc, "listeners") or []) if isinstance(l, dict)]


LOCAL_FILE_FIELDS = [
    (_listener_tls, ("cert", "key", "client_ca")),
    (lambda doc: [dig(doc, "fanout", "tls")], ("cert", "key", "client_ca")),
    (lambda doc: [dig(doc, "credentials", "watch")], ("ca_file", "client_cert", "client_key")),
]


def missing_files(doc):
    """(field, path) of every absolute path in LOCAL_FILE_FIELDS that does not exist here."""
    for holders, fields in LOCAL_FILE_FIELDS:
        for holder in holders(doc):
            for field in fields if isinstance(holder, dict) else ():
                path = holder.get(field)
                if isinstance(path, str) and os.path.isabs(path) and not os.path.exists(path):
                    yield field, path


def local_watch_url(url):
    """credentials.watch.url with its host and port replaced by LOOPBACK_REFUSED, or None when
    the sidecar's config check refuses the URL as written (then it is left alone, so that -t
    reports the real error: that check runs before any connection). Scheme and path are kept:
    `https://sidecar-fanout.llm-fanout.svc:9443` becomes `https://127.0.0.1:1`."""
    m = re.fullmatch(r"(https?)://([^/?#@]+)(.*)", url, re.S)
    if not m:
        return None
    scheme, authority, rest = m.groups()
    if scheme == "http":
        # Plain http is allowed to a loopback address only; elsewhere -t must say so.
        host = authority[1:].split("]")[0] if authority.startswith("[") else authority.split(":")[0]
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            return None
    return f"{scheme}://{LOOPBACK_REFUSED}{rest}"


def with_local_files(text, doc):
    """The config text for `sidecar -t` on this machine: missing certificate, key and CA paths
    (listeners[].tls, fanout.tls, credentials.watch) point at the throwaway pair, and a
    credentials.watch.url at a loopback port that refuses at once (so -t never looks up a
    cluster DNS name). The result is parsed again: a rewrite that did not land (a value written
    differently in the text, e.g. escaped) is reported as a failure of this script. Returns the
    text and what was rewritten (said beside a failure, which may quote the rewritten values)."""
    replacements = {}
    for field, path in missing_files(doc):
        crt, key = throwaway_pair()
        replacements[path] = str(key if field.endswith("key") else crt)
    url = dig(doc, "credentials", "watch", "url")
    local_url = local_watch_url(url) if isinstance(url, str) else None
    if local_url:
        replacements[url] = local_url
    # Longest first, so that a path that is a prefix of another is not replaced inside it.
    for old in sorted(replacements, key=len, reverse=True):
        text = text.replace(old, replacements[old])
    rewritten = yaml.safe_load(text)
    problems = [f"{field}: still names {path}, missing here" for field, path in missing_files(rewritten)]
    if local_url and dig(rewritten, "credentials", "watch", "url") != local_url:
        problems.append(f"credentials.watch.url: could not point {url!r} at {LOOPBACK_REFUSED}")
    if problems:
        raise RuntimeError("\n".join(problems))
    return text, [f"{old} -> {new}" for old, new in sorted(replacements.items())]


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

    # A sidecar in an application's pod is a native sidecar (k8s/README.md promises it): an init
    # container with restartPolicy Always, so it starts before the app and stops after it.
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "Deployment":
            continue
        pod = dig(doc, "spec", "template", "spec") or {}
        in_main = [c.get("name") for c in pod.get("containers") or []]
        if "sidecar" not in in_main and not any(
                c.get("name") == "sidecar" for c in pod.get("initContainers") or []):
            continue  # a Deployment of sidecars only (serving fan-out)
        if "app" not in in_main:
            continue
        native = any(c.get("name") == "sidecar" and c.get("restartPolicy") == "Always"
                     for c in pod.get("initContainers") or [])
        report(native, f"{path}: native sidecar",
               "initContainers[sidecar].restartPolicy: Always" if native else
               "the sidecar must be an init container with restartPolicy: Always")

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
            label = f"{path}: ConfigMap {name} {key}"
            try:
                local_text, rewritten = with_local_files(text, parsed)
            except RuntimeError as e:
                report(False, label, "local copy for sidecar -t", str(e))
                continue
            (folder / key).write_text(local_text)
            sidecar_check(folder / key, label, parsed, rewritten)

for path in sorted(pathlib.Path("conf").glob("*.y*ml")):
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        report(False, str(path), "YAML", str(e))
        continue
    if is_sidecar_config(doc):
        sidecar_check(path, str(path), doc)
    else:
        print(f"skip  {path} (not a gateway config: read through the config that names it)")

if failed:
    print(f"validate-k8s: FAILED: {', '.join(dict.fromkeys(failed))}")
    sys.exit(1)
print("validate-k8s: all checks passed")
PY
