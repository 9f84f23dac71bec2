"""`sidecar -t` on the sidecar configs shipped, in a copy whose certificate paths and fan-out
URL point at this machine (see with_local_files)."""
import ipaddress, os, re

import yaml

from common import dig, report, run, sidecar, work


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



_folders = []


def check_configmap_configs(data, label_of):
    """`sidecar -t` on every sidecar config among a ConfigMap's keys (`data`: key → text), in
    a folder holding every key side by side as the mounted volume does, so that companion files
    a config names relatively (a local credential store) are found. label_of(key) names a
    config in the report. Returns how many configs were checked."""
    configs = []
    for key, text in data.items():
        if not key.endswith((".yaml", ".yml")):
            continue
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError as e:
            report(False, label_of(key), "YAML", str(e))
            continue
        if is_sidecar_config(parsed):
            configs.append((key, text, parsed))
    if not configs:
        return 0
    folder = work / f"configmap-{len(_folders) + 1}"
    folder.mkdir()
    _folders.append(folder)
    for key, text in data.items():
        (folder / key).write_text(text)
    for key, text, parsed in configs:
        try:
            local_text, rewritten = with_local_files(text, parsed)
        except RuntimeError as e:
            report(False, label_of(key), "local copy for sidecar -t", str(e))
            continue
        (folder / key).write_text(local_text)
        sidecar_check(folder / key, label_of(key), parsed, rewritten)
    return len(configs)
