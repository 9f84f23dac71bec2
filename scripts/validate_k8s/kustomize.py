"""What a kustomization lists, read offline: its resources and configMapGenerator files exist
and every file beside it is one of them; the ConfigMaps the generators make, built here as
kustomize would (name, a data key per file); and the ConfigMap names workloads mount."""
import pathlib

import yaml

from common import dig

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml")
WORKLOAD_KINDS = ("Deployment", "DaemonSet", "StatefulSet", "Job")
# The generator features the manifests use; anything else would be built differently here
# than by kustomize, so it fails instead.
GENERATOR_KEYS = {"name", "files", "options"}
GENERATOR_OPTION_KEYS = {"labels", "annotations"}


def kustomization_file(folder):
    return next((folder / n for n in KUSTOMIZATION_NAMES if (folder / n).exists()), None)


def load(folder):
    """The parsed kustomization of `folder` (a mapping; {} when empty)."""
    return yaml.safe_load(kustomization_file(folder).read_text()) or {}


def generator_files(entry):
    """(data key, file name) of each `files:` item of a configMapGenerator entry: `key=file`,
    or `file` whose key is its base name."""
    pairs = []
    for item in entry.get("files") or []:
        key, _, file = str(item).rpartition("=")
        pairs.append((key or pathlib.PurePath(file).name, file))
    return pairs


def generator_problems(k):
    """What in the configMapGenerator entries this check (or the rollout) cannot stand for."""
    problems = []
    if (k.get("generatorOptions") or {}).get("disableNameSuffixHash"):
        problems.append("generatorOptions.disableNameSuffixHash: a config change would not roll the pods")
    names = [entry.get("name") for entry in k.get("configMapGenerator") or []]
    problems += [f"configMapGenerator {n}: named twice" for n in sorted(set(names), key=str) if names.count(n) > 1]
    for entry in k.get("configMapGenerator") or []:
        name = entry.get("name", "?")
        unknown = sorted(set(entry) - GENERATOR_KEYS)
        unknown += sorted(f"options.{o}" for o in set(entry.get("options") or {}) - GENERATOR_OPTION_KEYS)
        if unknown:
            problems.append(f"configMapGenerator {name}: not checked here, so not allowed: {', '.join(unknown)}")
        if not entry.get("name") or not entry.get("files"):
            problems.append(f"configMapGenerator {name}: needs a name and files")
        keys = [key for key, _ in generator_files(entry)]
        problems += [f"configMapGenerator {name}: key {key} twice" for key in sorted(set(keys)) if keys.count(key) > 1]
    return problems


def listing_problems(folder, k):
    """(problems, Component subfolders): listed files that are missing, files beside the
    kustomization it does not list (they would silently not be applied), and the generators'
    problems. A subfolder must be a Component (an opt-in part, checked on its own)."""
    resources = [str(r) for r in k.get("resources") or []]
    generated = [f for e in k.get("configMapGenerator") or [] for _, f in generator_files(e)]
    problems = [f"listed in resources but missing: {r}" for r in resources if not (folder / r).exists()]
    problems += [f"listed in configMapGenerator but missing: {f}" for f in generated if not (folder / f).is_file()]
    components = []
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            inner = kustomization_file(path)
            if inner and (yaml.safe_load(inner.read_text()) or {}).get("kind") == "Component":
                components.append(path)
            else:
                problems.append(f"{path.name}/: a folder that is not a kustomize Component")
        elif path.name not in KUSTOMIZATION_NAMES and path.name not in resources + generated:
            problems.append(f"neither a resource nor a configMapGenerator file: {path.name}")
    return problems + generator_problems(k), components


def generated_configmaps(folder, k):
    """The ConfigMaps the kustomization's configMapGenerator makes, before kustomize adds the
    name's hash and the namespace."""
    maps = []
    for entry in k.get("configMapGenerator") or []:
        options = entry.get("options") or {}
        metadata = {"name": entry.get("name")}
        metadata.update({field: options[field] for field in GENERATOR_OPTION_KEYS if field in options})
        data = {key: (folder / file).read_text() for key, file in generator_files(entry)
                if (folder / file).is_file()}
        maps.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    return maps


def pod_spec(doc):
    """The pod template's spec of a workload ({} when it has none)."""
    return dig(doc, "spec", "template", "spec") or {}


def mounted_configmaps(doc):
    """(volume name, ConfigMap name) of every ConfigMap a workload's pods mount, projected
    volumes included."""
    for volume in pod_spec(doc).get("volumes") or []:
        if "configMap" in volume:
            yield volume.get("name"), (volume["configMap"] or {}).get("name")
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "configMap" in source:
                yield volume.get("name"), (source["configMap"] or {}).get("name")
