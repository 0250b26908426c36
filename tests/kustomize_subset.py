"""The part of `kustomize build` that k8s/ uses, in Python, so the tests render every overlay offline.

Supported: resources (files and folders), namespace, images, replicas and patches in JSON 6902 form
(add / replace / remove, inline or from a file). Anything else in a kustomization raises, so a
manifest change that needs more cannot pass unnoticed; tests/test_k8s.py also compares this
renderer with the real `kustomize` / `kubectl kustomize` wherever one is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images", "replicas", "patches"}
CLUSTER_SCOPED_KINDS = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
SCALABLE_KINDS = {"Deployment", "StatefulSet", "ReplicaSet"}


class KustomizeError(ValueError):
    """A kustomization this subset cannot render (or that kustomize itself would reject)."""


def build(folder: str | Path) -> list[dict[str, Any]]:
    """Render the kustomization in ``folder`` like `kustomize build folder`."""
    folder = Path(folder)
    file = next((folder / n for n in ("kustomization.yaml", "kustomization.yml") if (folder / n).is_file()), None)
    if file is None:
        raise KustomizeError(f"{folder}: no kustomization.yaml")
    spec = yaml.safe_load(file.read_text()) or {}
    unknown = set(spec) - SUPPORTED_FIELDS
    if unknown:
        raise KustomizeError(f"{file}: fields {sorted(unknown)} are not supported by tests/kustomize_subset.py")

    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = folder / entry
        if path.is_dir():
            objects.extend(build(path))
        elif path.is_file():
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
        else:
            raise KustomizeError(f"{file}: resource {entry!r} not found")
    _check_unique(objects, file)

    if "namespace" in spec:
        for obj in objects:
            if obj.get("kind") not in CLUSTER_SCOPED_KINDS:
                obj.setdefault("metadata", {})["namespace"] = spec["namespace"]
    for patch in spec.get("patches", []):
        _apply_patch(objects, patch, folder, file)
    for image in spec.get("images", []):
        _set_image(objects, image)
    for replicas in spec.get("replicas", []):
        _set_replicas(objects, replicas, file)
    return objects


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata", {})
    return obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")


def _check_unique(objects: list[dict[str, Any]], file: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        if _key(obj) in seen:
            raise KustomizeError(f"{file}: {_key(obj)} is defined twice")
        seen.add(_key(obj))


def _targets(objects: list[dict[str, Any]], target: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for obj in objects:
        if "kind" in target and obj.get("kind") != target["kind"]:
            continue
        if "name" in target and obj.get("metadata", {}).get("name") != target["name"]:
            continue
        found.append(obj)
    return found


def _apply_patch(objects: list[dict[str, Any]], patch: dict[str, Any], folder: Path, file: Path) -> None:
    text = patch["patch"] if "patch" in patch else (folder / patch["path"]).read_text()
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise KustomizeError(f"{file}: only JSON 6902 patches (a list of operations) are supported")
    targets = _targets(objects, patch.get("target", {}))
    if not targets:
        raise KustomizeError(f"{file}: patch target {patch.get('target')} matches nothing")
    for obj in targets:
        for op in operations:
            _json_patch(obj, op, file)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"JSON pointer {path!r} must start with /")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _json_patch(obj: dict[str, Any], op: dict[str, Any], file: Path) -> None:
    *parents, last = _pointer(op["path"])
    node: Any = obj
    for part in parents:
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError) as exc:
            raise KustomizeError(f"{file}: path {op['path']} does not exist ({exc})") from exc
    kind = op["op"]
    value = copy.deepcopy(op.get("value"))
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if kind == "add":
            node.insert(index, value)
        elif kind == "replace":
            node[index] = value
        elif kind == "remove":
            del node[index]
        else:
            raise KustomizeError(f"{file}: op {kind!r} is not supported")
    else:
        if kind in ("replace", "remove") and last not in node:
            raise KustomizeError(f"{file}: {kind} of missing path {op['path']}")
        if kind in ("add", "replace"):
            node[last] = value
        elif kind == "remove":
            del node[last]
        else:
            raise KustomizeError(f"{file}: op {kind!r} is not supported")


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj.get("kind") not in POD_TEMPLATE_KINDS:
        return []
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _set_image(objects: list[dict[str, Any]], image: dict[str, Any]) -> None:
    for obj in objects:
        for container in _containers(obj):
            ref = container.get("image", "")
            name, _, tag = ref.partition("@")[0].rpartition(":") if ":" in ref.split("/")[-1] else (ref, "", "")
            if name != image["name"]:
                continue
            new = image.get("newName", name)
            if "digest" in image:
                container["image"] = f"{new}@{image['digest']}"
            elif "newTag" in image:
                container["image"] = f"{new}:{image['newTag']}"
            else:
                container["image"] = f"{new}:{tag}" if tag else new


def _set_replicas(objects: list[dict[str, Any]], replicas: dict[str, Any], file: Path) -> None:
    matched = [o for o in objects if o.get("kind") in SCALABLE_KINDS and o["metadata"]["name"] == replicas["name"]]
    if not matched:
        raise KustomizeError(f"{file}: replicas for {replicas['name']!r} match no workload")
    for obj in matched:
        obj["spec"]["replicas"] = replicas["count"]
