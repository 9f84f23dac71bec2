"""The opt-in PodMonitor Component of a form (k8s/<form>/monitoring/), checked offline: the
Prometheus Operator's CRD is not among the Kubernetes schemas, so its keys are checked against
the part of the PodMonitor API (monitoring.coreos.com/v1) the manifests may use, its selector
against the pod templates of the form's workloads, and each endpoint's port against the
sidecar's admin port (the port of `admin.address` in the config the sidecar container reads)."""
import ipaddress, pathlib

import yaml

from common import dig
from kustomize import mounted_configmaps, pod_spec

API_VERSION = "monitoring.coreos.com/v1"
TOP_KEYS = {"apiVersion", "kind", "metadata", "spec"}
METADATA_KEYS = {"name", "namespace", "labels", "annotations"}
SPEC_KEYS = {"selector", "namespaceSelector", "podMetricsEndpoints", "jobLabel", "podTargetLabels",
             "sampleLimit", "targetLimit", "labelLimit", "labelNameLengthLimit",
             "labelValueLengthLimit", "attachMetadata", "scrapeClass"}
SELECTOR_KEYS = {"matchLabels", "matchExpressions"}
NAMESPACE_SELECTOR_KEYS = {"any", "matchNames"}
# `targetPort` (deprecated) and `portNumber` are left out on purpose: the port is named.
ENDPOINT_KEYS = {"port", "path", "scheme", "params", "interval", "scrapeTimeout", "honorLabels",
                 "honorTimestamps", "relabelings", "metricRelabelings", "filterRunning",
                 "followRedirects", "enableHttp2"}
SIDECAR_CONTAINER = "sidecar"
DEFAULT_ADMIN_ADDRESS = "127.0.0.1:9901"   # README, "Configuration reference"


def unknown_keys(where, mapping, allowed):
    if not isinstance(mapping, dict):
        return [f"{where}: not a mapping"]
    return [f"{where}.{key}: not a PodMonitor field this check knows" for key in sorted(set(mapping) - allowed)]


def shape_problems(doc):
    problems = []
    if doc.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: {doc.get('apiVersion')!r}, expected {API_VERSION}")
    if doc.get("kind") != "PodMonitor":
        problems.append(f"kind: {doc.get('kind')!r}, expected PodMonitor")
    problems += unknown_keys("", doc, TOP_KEYS)
    problems += unknown_keys("metadata", doc.get("metadata") or {}, METADATA_KEYS)
    spec = doc.get("spec") or {}
    problems += unknown_keys("spec", spec, SPEC_KEYS)
    problems += unknown_keys("spec.selector", spec.get("selector") or {}, SELECTOR_KEYS)
    if "namespaceSelector" in spec:
        problems += unknown_keys("spec.namespaceSelector", spec["namespaceSelector"], NAMESPACE_SELECTOR_KEYS)
    endpoints = spec.get("podMetricsEndpoints")
    if not isinstance(endpoints, list) or not endpoints:
        return problems + ["spec.podMetricsEndpoints: at least one endpoint"]
    for i, endpoint in enumerate(endpoints):
        where = f"spec.podMetricsEndpoints[{i}]"
        problems += unknown_keys(where, endpoint, ENDPOINT_KEYS)
        if isinstance(endpoint, dict):
            if endpoint.get("path") != "/metrics":
                problems.append(f"{where}.path: {endpoint.get('path')!r}, expected /metrics")
            if endpoint.get("scheme", "http") != "http":
                problems.append(f"{where}.scheme: the admin listener is plain HTTP")
    if not (spec.get("selector") or {}):
        problems.append("spec.selector: empty (it would select every pod)")
    return problems


def selects(selector, labels):
    """Whether a Kubernetes label selector matches `labels`."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": labels.get(key) not in values,
              "Exists": key in labels,
              "DoesNotExist": key not in labels}.get(op)
        if not ok:
            return False
    return True


def sidecar_container(pod):
    return next((c for c in (pod.get("initContainers") or []) + (pod.get("containers") or [])
                 if c.get("name") == SIDECAR_CONTAINER), None)


def config_path(container):
    args = [str(a) for a in container.get("args") or []]
    for i, arg in enumerate(args):
        if arg in ("-c", "--config") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    env = {e.get("name"): e.get("value") for e in container.get("env") or []}
    return env.get("SIDECAR_CONFIG")


def admin_port(doc, configmaps):
    """The port of admin.address in the config the workload's sidecar reads, found through its
    `-c` argument, the volume mounted there and the ConfigMap behind it; or a problem."""
    pod = pod_spec(doc)
    container = sidecar_container(pod)
    path = config_path(container)
    if not path:
        return None, "the sidecar container names no config (-c or SIDECAR_CONFIG)"
    volumes = dict(mounted_configmaps(doc))
    for mount in container.get("volumeMounts") or []:
        folder = pathlib.PurePosixPath(mount.get("mountPath", "/"))
        if folder in pathlib.PurePosixPath(path).parents and mount.get("name") in volumes:
            key = str(pathlib.PurePosixPath(path).relative_to(folder))
            configmap = volumes[mount["name"]]
            if configmap not in configmaps:
                return None, f"{path}: ConfigMap {configmap} is not in this form"
            text = configmaps[configmap].get(key)
            if text is None:
                return None, f"{path}: no key {key} in ConfigMap {configmap}"
            address = dig(yaml.safe_load(text), "admin", "address") or DEFAULT_ADMIN_ADDRESS
            host, _, port = str(address).rpartition(":")
            try:
                if ipaddress.ip_address(host.strip("[]")).is_loopback:
                    return None, f"admin.address {address} is loopback: Prometheus cannot reach it"
            except ValueError:
                pass
            return int(port), None
    return None, f"{path}: not in a mounted ConfigMap"


def check(doc, workloads, configmaps):
    """Problems of one PodMonitor against the form's workloads ((label, doc) pairs) and its
    ConfigMaps (name → data)."""
    problems = shape_problems(doc)
    selector = dig(doc, "spec", "selector") or {}
    endpoints = [e for e in dig(doc, "spec", "podMetricsEndpoints") or [] if isinstance(e, dict)]
    selected = 0
    for label, workload in workloads:
        pod_labels = dig(workload, "spec", "template", "metadata", "labels") or {}
        has_sidecar = sidecar_container(pod_spec(workload)) is not None
        if not selects(selector, pod_labels):
            if has_sidecar:
                problems.append(f"spec.selector does not select the pods of {label} (labels {pod_labels})")
            continue
        selected += 1
        if not has_sidecar:
            problems.append(f"spec.selector selects {label}, which runs no sidecar")
            continue
        port, problem = admin_port(workload, configmaps)
        if problem:
            problems.append(f"{label}: {problem}")
            continue
        ports = {p.get("name"): p.get("containerPort")
                 for p in sidecar_container(pod_spec(workload)).get("ports") or []}
        for i, endpoint in enumerate(endpoints):
            name = endpoint.get("port")
            if name not in ports:
                problems.append(f"spec.podMetricsEndpoints[{i}].port: {name!r} is not a port of "
                                f"{label}'s sidecar container (it has {sorted(map(str, ports))})")
            elif ports[name] != port:
                problems.append(f"spec.podMetricsEndpoints[{i}].port: {name!r} is {ports[name]} in "
                                f"{label}, not the admin port {port} (admin.address)")
    if not selected:
        problems.append("spec.selector selects no workload of this form")
    return problems
