"""Validates the kustomize forms under k8s/ and the sidecar configs shipped (the list of checks
is in scripts/validate-k8s.sh, which runs this in a venv with kubernetes-validate):
    python scripts/validate_k8s K8S_VERSION SIDECAR_BIN VALIDATOR WORK_DIR"""
import pathlib, shutil, sys

import yaml

import kustomize, podmonitor
from common import dig, failed, report, run, schema_check, work
from configs import check_configmap_configs, is_sidecar_config, sidecar_check


def load_docs(path):
    """The YAML documents of `path`, or None (reported) when it does not parse."""
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        report(False, str(path), "YAML", str(e))
        return None


def check_native_sidecar(path, doc):
    """A sidecar in an application's pod is a native sidecar (k8s/README.md promises it): an
    init container with restartPolicy Always, so it starts before the app and stops after it."""
    pod = kustomize.pod_spec(doc)
    in_main = [c.get("name") for c in pod.get("containers") or []]
    if "app" not in in_main or not any(
            c.get("name") == "sidecar" for c in (pod.get("containers") or []) + (pod.get("initContainers") or [])):
        return  # no app, or a Deployment of sidecars only (serving fan-out)
    native = any(c.get("name") == "sidecar" and c.get("restartPolicy") == "Always"
                 for c in pod.get("initContainers") or [])
    report(native, f"{path}: native sidecar",
           "initContainers[sidecar].restartPolicy: Always" if native else
           "the sidecar must be an init container with restartPolicy: Always")


def holds_sidecar_config(text):
    try:
        return is_sidecar_config(yaml.safe_load(text))
    except yaml.YAMLError:
        return False


def render(folder, label):
    """`kubectl kustomize` of a form, the output checked against the schemas."""
    rc, out = run(["kubectl", "kustomize", str(folder)])
    if rc != 0:
        report(False, f"{label} (kubectl kustomize)", "", out)
        return
    rendered = work / f"kustomize-{folder.name}.yaml"
    rendered.write_text(out)
    schema_check(rendered, f"{label} rendered by kubectl kustomize")


def render_with(folder, component):
    """The PodMonitors `kubectl kustomize` renders once the form includes `component` as the
    README says (`components: [monitoring]`), in a copy of the form; None when it failed."""
    copy = work / f"with-{component.name}-{folder.name}"
    shutil.copytree(folder, copy)
    k = kustomize.load(copy)
    k["components"] = list(k.get("components") or []) + [component.name]
    kustomize.kustomization_file(copy).write_text(yaml.safe_dump(k))
    rc, out = run(["kubectl", "kustomize", str(copy)])
    if rc != 0:
        report(False, f"{folder}/ with {component.name}/ (kubectl kustomize)", "", out)
        return None
    return [d for d in yaml.safe_load_all(out) if d and d.get("kind") == "PodMonitor"]


def check_component(folder, component, workloads, configmaps, namespace):
    """The opt-in monitoring Component: what it lists, each PodMonitor against the form, that the
    form does not include it by default, and (with kubectl) that the form renders with it."""
    k = kustomize.load(component)
    problems, inner = kustomize.listing_problems(component, k)
    problems += [f"{c.name}/: a Component inside a Component" for c in inner]
    if k.get("apiVersion") != "kustomize.config.k8s.io/v1alpha1":
        problems.append(f"apiVersion: {k.get('apiVersion')!r}, expected kustomize.config.k8s.io/v1alpha1")
    if component.name in [str(c).strip("./") for c in kustomize.load(folder).get("components") or []]:
        problems.append(f"{folder}/kustomization.yaml includes it: it must stay opt-in (no Prometheus "
                        "Operator, no PodMonitor CRD, and kubectl apply fails)")
    report(not problems, f"{component}/kustomization.yaml", "Component", "\n".join(problems))
    for name in k.get("resources") or []:
        for doc in load_docs(component / name) or []:
            problems = podmonitor.check(doc, workloads, configmaps)
            report(not problems, str(component / name),
                   f"PodMonitor {dig(doc, 'metadata', 'name')}", "\n".join(problems))
    if shutil.which("kubectl"):
        monitors = render_with(folder, component)
        if monitors is not None:
            ok = bool(monitors) and all(dig(d, "metadata", "namespace") == namespace for d in monitors)
            report(ok, f"{folder}/ with {component.name}/ rendered by kubectl kustomize",
                   f"{len(monitors)} PodMonitor(s) in namespace {namespace}")


def check_form(folder, visited):
    """Every check of one kustomize form (k8s/<form>/)."""
    k = kustomize.load(folder)
    problems, components = kustomize.listing_problems(folder, k)
    resources = [folder / str(r) for r in k.get("resources") or [] if (folder / str(r)).exists()]
    generators = k.get("configMapGenerator") or []
    report(not problems, str(kustomize.kustomization_file(folder)),
           f"kustomization, {len(resources)} resources, {len(generators)} generated ConfigMaps",
           "\n".join(problems))
    visited.add(kustomize.kustomization_file(folder))

    workloads, configmaps = [], {}
    for path in resources:
        visited.add(path)
        docs = load_docs(path)
        if docs is None:
            continue
        schema_check(path)
        for doc in docs:
            if not isinstance(doc, dict):
                continue
            name = dig(doc, "metadata", "name")
            if doc.get("kind") in kustomize.WORKLOAD_KINDS:
                workloads.append((f"{path}: {doc['kind']} {name}", doc))
                check_native_sidecar(path, doc)
            if doc.get("kind") == "ConfigMap":
                configmaps[name] = doc.get("data") or {}
                # A hand-written ConfigMap keeps its name when its content changes: the pods
                # mounting it would not roll, so a sidecar config belongs in a generator.
                held = [key for key, text in (doc.get("data") or {}).items()
                        if key.endswith((".yaml", ".yml")) and holds_sidecar_config(text)]
                if held:
                    report(False, f"{path}: ConfigMap {name}",
                           f"holds sidecar config {', '.join(held)}: generate it (configMapGenerator) "
                           "so that a change rolls the pods")

    for generated in kustomize.generated_configmaps(folder, k):
        name = generated["metadata"]["name"]
        files = dict(kustomize.generator_files(next(g for g in generators if g.get("name") == name)))
        visited.update(folder / f for f in files.values())
        manifest = work / f"generated-{folder.name}-{name}.yaml"
        manifest.write_text(yaml.safe_dump(generated))
        schema_check(manifest, f"{folder}/kustomization.yaml: configMapGenerator {name}")
        configmaps[name] = generated["data"]
        check_configmap_configs(generated["data"],
                                lambda key: f"{folder / files[key]}: ConfigMap {name} key {key}")

    for label, doc in workloads:
        missing = [f"volume {v}: ConfigMap {c!r} is neither a resource nor generated here"
                   for v, c in kustomize.mounted_configmaps(doc) if c not in configmaps]
        report(not missing, f"{label}: ConfigMap volumes", "each a resource or generator of the form",
               "\n".join(missing))

    if shutil.which("kubectl"):
        render(folder, f"{folder}/")
    else:
        print(f"skip  {folder}/ rendered (kubectl not installed; files checked one by one)")

    for component in components:
        visited.update(component.iterdir())
        check_component(folder, component, workloads, configmaps, k.get("namespace"))


visited = set()
for kustomization in sorted(pathlib.Path("k8s").glob("*/kustomization.y*ml")):
    check_form(kustomization.parent, visited)
# Every manifest is checked through a form: one outside any would never be validated.
stray = [p for p in pathlib.Path("k8s").rglob("*.y*ml") if p not in visited]
report(not stray, "k8s/", "every manifest belongs to a form", "\n".join(map(str, sorted(stray))))

for path in sorted(pathlib.Path("conf").glob("*.y*ml")):
    docs = load_docs(path)
    if docs is None:
        continue
    if docs and is_sidecar_config(docs[0]):
        sidecar_check(path, str(path), docs[0])
    else:
        print(f"skip  {path} (not a gateway config: read through the config that names it)")

if failed:
    print(f"validate-k8s: FAILED: {', '.join(dict.fromkeys(failed))}")
    sys.exit(1)
print("validate-k8s: all checks passed")
