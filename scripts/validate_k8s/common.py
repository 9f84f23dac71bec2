"""What every check shares: the command line (Kubernetes version, sidecar binary, validator,
scratch folder), the one-line status report and the list of failures, running a command,
the Kubernetes schema check, and reading nested YAML."""
import pathlib, subprocess, sys

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

