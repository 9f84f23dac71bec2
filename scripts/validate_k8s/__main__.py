"""Validates the manifests under k8s/ and the sidecar configs shipped (see
scripts/validate-k8s.sh for the list of checks). Run by that script, in a venv with
kubernetes-validate: python scripts/validate_k8s K8S_VERSION SIDECAR_BIN VALIDATOR WORK_DIR"""
import pathlib, shutil, sys

import yaml

from common import dig, failed, report, run, schema_check, work
from configs import is_sidecar_config, sidecar_check, with_local_files

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
