"""An in-memory Kubernetes API for unit tests, and the rest of the world the controllers talk to.

``FakeKube`` stands in for ``CoreV1Api``, ``CustomObjectsApi`` and ``PolicyV1Api`` at once (pass
the same object as ``core=``, ``custom=`` and ``policy=``), for the calls the reconcilers and the
webhook make. Objects are kept as the API server's JSON (dicts, camelCase keys), and the answers
follow the API server where the controllers depend on it:

* typed reads and lists (pods, nodes, events, PodDisruptionBudgets) return kubernetes_asyncio
  models, as the real client does (``pod.spec.node_name``, ``(await list_node()).items``); custom
  objects come back as dicts; ``api_client.sanitize_for_serialization`` is the real one;
* every write gives the object a new ``metadata.resourceVersion``; a write carrying an older one
  answers 409 Conflict, so does creating a name that exists; a missing object is 404; errors are
  ``kubernetes_asyncio.client.ApiException`` with a Status body;
* custom objects are patched with JSON merge patch (RFC 7386: ``null`` deletes a key, lists are
  replaced whole), which must be asked for with ``_content_type`` as with the real client; the
  object ignores ``status`` and the status subresource ignores everything else; ``status`` in a
  create is dropped; a delete sets ``deletionTimestamp`` while finalizers remain, and removing
  the last finalizer removes the object; no finalizer can be added to an object being deleted;
* pods: the API server's status on create (``Pending``); delete honours ``preconditions.uid``
  (409) and removes at once with grace 0 (or an unbound or finished pod), else leaves the pod
  terminating until ``Kubelet.terminate``; the Eviction API honours PodDisruptionBudgets
  (``matchLabels``) and ``dry_run``; a pod is patched with a JSON patch only (``test`` ops
  included: a failed one is 422), and an update may change only what the API server lets change
  (container images, labels and annotations; scheduling gates may only be removed, and only a
  gated pod's ``nodeSelector`` may be added to);
* lists filter by ``field_selector`` (any dotted path: ``spec.nodeName=``, ``involvedObject.uid=``;
  ``=``, ``==``, ``!=``) and ``label_selector`` (``k=v``, ``k!=v``, ``k``, ``!k``).

``writes`` logs the writes a test may care about, one line each ("create pod shop/web",
"delete pod shop/web", "evict shop/web", "patch node n1 unschedulable=True", "patch pod shop/web
/spec/schedulingGates" (the paths the JSON patch wrote), "create podmigration
shop/m", "delete nodedrain d"); status and finalizer patches are not logged. ``events`` holds every
Event as a dict.

The world around the API server is played by the tests: ``Kubelet`` (pods running, Ready, failing,
images pulled, the scheduler's binding), ``through_webhook`` (a controller's pod creation passing
podmigrate's admission webhook), ``FakeAgents`` (the node agents) and ``FakeClock``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from agentapi import contract
from agentapi.client import AgentError
from migrator import api, slots, units
from migrator.slots import Slot
from migrator.webhook import hold_patch, restore_patch

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
_REASONS = {
    400: "BadRequest",
    404: "NotFound",
    409: "Conflict",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
}


def api_error(status: int, message: str = "") -> client.ApiException:
    """What kubernetes_asyncio raises for an API server's error answer (a Status in the body)."""
    exc = client.ApiException(status=status, reason=_REASONS.get(status, "Error"))
    exc.body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message or f"status {status}",
            "reason": _REASONS.get(status, "Error"),
            "code": status,
        }
    )
    return exc


# --- JSON documents ------------------------------------------------------------------------------
def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, ``null`` deletes, anything else (lists too) replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class JsonPatchTestFailed(ValueError):
    """A JSON patch's ``test`` operation found another value (the API server answers 422)."""


def json_patch(doc: Any, ops: Iterable[Mapping[str, Any]]) -> Any:
    """RFC 6902 add, replace, remove and test (what admission webhooks and controllers send); a new document."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in str(op["path"]).split("/")[1:]]
        parent = doc
        try:
            for part in parts[:-1]:
                parent = parent[int(part)] if isinstance(parent, list) else parent[part]
            last = parts[-1]
            if op["op"] in ("add", "replace"):
                value = copy.deepcopy(op["value"])
                if isinstance(parent, list):
                    if last == "-":
                        parent.append(value)
                    elif op["op"] == "add":
                        parent.insert(int(last), value)
                    else:
                        parent[int(last)] = value
                else:
                    if op["op"] == "replace" and last not in parent:
                        raise KeyError(last)
                    parent[last] = value
            elif op["op"] == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            elif op["op"] == "test":
                current = parent[int(last)] if isinstance(parent, list) else parent[last]
                if current != op["value"]:
                    raise JsonPatchTestFailed(f"JSON patch test {op} failed: the value is {current!r}")
            else:
                raise ValueError(f"unsupported JSON patch op {op['op']!r}")
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"JSON patch {op} does not apply: {exc!r}") from None
    return doc


def _field(obj: Any, path: str) -> str:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, Mapping) else None
    if isinstance(obj, bool):
        return str(obj).lower()
    return "" if obj is None else str(obj)


def field_selector_matches(obj: Mapping[str, Any], selector: str | None) -> bool:
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            path, value = term.split("!=", 1)
            if _field(obj, path) == value:
                return False
        else:
            path, value = term.replace("==", "=").split("=", 1)
            if _field(obj, path) != value:
                return False
    return True


def label_selector_matches(labels: Mapping[str, str] | None, selector: str | None) -> bool:
    labels = labels or {}
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if " in " in term or " notin " in term or "(" in term:
            raise NotImplementedError(f"set-based label selector {term!r}: not in the fake")
        if term.startswith("!"):
            if term[1:] in labels:
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True


def _select(objs: Iterable[dict[str, Any]], field_selector: str | None, label_selector: str | None) -> list[dict[str, Any]]:
    return [
        o
        for o in objs
        if field_selector_matches(o, field_selector) and label_selector_matches(o["metadata"].get("labels"), label_selector)
    ]


def _replace(stored: dict[str, Any], new: dict[str, Any]) -> None:
    """Change a stored object in place: tests holding it see the change."""
    stored.clear()
    stored.update(new)


def _forbidden_pod_update(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """Why the API server refuses this change of a pod's spec (or metadata that only it sets), or None."""
    fixed = ("name", "namespace", "uid", "creationTimestamp", "ownerReferences")
    if any(old["metadata"].get(k) != new["metadata"].get(k) for k in fixed):
        return "metadata: Forbidden: name, namespace, uid and owners cannot be changed"
    before, after = copy.deepcopy(dict(old["spec"])), copy.deepcopy(dict(new["spec"]))
    old_gates, new_gates = before.pop("schedulingGates", None) or [], after.pop("schedulingGates", None) or []
    if any(g not in old_gates for g in new_gates):
        return "spec.schedulingGates: Forbidden: only deletion is allowed, but found new scheduling gate"
    old_selector, new_selector = before.pop("nodeSelector", None) or {}, after.pop("nodeSelector", None) or {}
    if old_selector != new_selector and (not old_gates or any(new_selector.get(k) != v for k, v in old_selector.items())):
        return "spec.nodeSelector: Forbidden: only additions to a gated pod's nodeSelector are allowed"
    for key in ("containers", "initContainers"):
        for container in [*(before.get(key) or []), *(after.get(key) or [])]:
            container.pop("image", None)
    if before != after:
        return "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`, ..."
    return None


# --- models ---------------------------------------------------------------------------------------
class OfflineApiClient(client.ApiClient):
    """The real ``ApiClient`` (``sanitize_for_serialization``, JSON -> model) with no connection to anything.

    Models are built without client-side validation: test data may leave out fields a real API
    server always fills in (an ownerReference's apiVersion, a PDB status's counts).
    """

    def __init__(self) -> None:  # not super().__init__(): that opens an aiohttp session
        self.configuration = client.Configuration()
        self.configuration.client_side_validation = False
        self.client_side_validation = False
        self.default_headers: dict[str, str] = {}
        self.cookie = None
        self.pool_threads = 1

    async def close(self) -> None:
        return None

    def model(self, data: Any, klass: str) -> Any:
        """``data`` (JSON) as the model ``klass`` names, the way the real client deserializes a response."""
        return self._ApiClient__deserialize(copy.deepcopy(data), klass)  # type: ignore[attr-defined]

    def _ApiClient__deserialize_model(self, data: Any, klass: Any) -> Any:  # the base class calls this by its mangled name
        if not isinstance(data, Mapping) or not klass.openapi_types:
            return data
        kwargs = {
            attr: self._ApiClient__deserialize(data[key], klass.openapi_types[attr])  # type: ignore[attr-defined]
            for attr, key in klass.attribute_map.items()
            if key in data
        }
        return klass(local_vars_configuration=self.configuration, **kwargs)


# --- the API server -------------------------------------------------------------------------------
class FakeKube:
    """CoreV1Api + CustomObjectsApi + PolicyV1Api over dicts in memory (see the module docstring)."""

    def __init__(self, *, clock: Callable[[], datetime] | None = None) -> None:
        self.api_client = OfflineApiClient()
        self.clock = clock or units.now
        self.nodes: dict[str, dict[str, Any]] = {}
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.claims: dict[tuple[str, str], dict[str, Any]] = {}  # PersistentVolumeClaims
        self.volumes: dict[str, dict[str, Any]] = {}  # PersistentVolumes
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.pdbs: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        # plural -> {(namespace, name) or name: object}
        self.custom_objects: dict[str, dict[Any, dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.writes: list[str] = []
        self.dry_run_evictions: list[str] = []
        self.evictions_refused = 0  # the next N real evictions answer 429
        self.dry_runs_refused = ""  # a 429 message for every dry-run eviction, whatever the PDBs' status says
        self._versions = itertools.count(1)
        self._serial = itertools.count(1)

    @property
    def migrations(self) -> dict[tuple[str, str], dict[str, Any]]:
        return self.custom_objects.setdefault("podmigrations", {})

    @property
    def drains(self) -> dict[str, dict[str, Any]]:
        return self.custom_objects.setdefault("nodedrains", {})

    # --- bookkeeping
    def _version(self) -> str:
        return str(next(self._versions))

    def timestamp(self, *, delay: float = 0.0) -> str:
        """Now, as the API server writes metadata timestamps (whole seconds)."""
        return (self.clock() + timedelta(seconds=delay)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _admit(self, obj: dict[str, Any], *, kind: str, namespace: str | None) -> dict[str, Any]:
        """Fill in what the API server sets on create (keeping what a test's seed data already says)."""
        meta = obj.setdefault("metadata", {})
        if namespace is not None:
            meta["namespace"] = namespace
        serial = next(self._serial)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise api_error(422, f"{kind}: name or generateName is required")
            suffix = hashlib.sha256(f"{kind}/{serial}".encode()).hexdigest()[:5]
            meta["name"] = f"{meta['generateName']}{suffix}"
        meta.setdefault("uid", str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}/{namespace}/{meta['name']}/{serial}")))
        meta.setdefault("creationTimestamp", self.timestamp())
        meta["resourceVersion"] = self._version()
        return obj

    @staticmethod
    def _fresh(body: dict[str, Any]) -> dict[str, Any]:
        """A create's body without what only the API server sets."""
        meta = body.setdefault("metadata", {})
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(key, None)
        return body

    def _plain(self, body: Any) -> dict[str, Any]:
        return copy.deepcopy(self.api_client.sanitize_for_serialization(body))

    @staticmethod
    def _found(table: Mapping[Any, dict[str, Any]], key: Any, what: str) -> dict[str, Any]:
        obj = table.get(key)
        if obj is None:
            name = key[1] if isinstance(key, tuple) else key
            raise api_error(404, f'{what} "{name}" not found')
        return obj

    def _list(self, items: list[dict[str, Any]], klass: str) -> Any:
        return self.api_client.model({"metadata": {"resourceVersion": self._version()}, "items": items}, klass)

    # --- seeding (a test's backdoor: the object is stored as given, status included, and kept live)
    def add_node(self, node: dict[str, Any]) -> dict[str, Any]:
        self.nodes[node["metadata"]["name"]] = self._admit(node, kind="nodes", namespace=None)
        return node

    def add_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        namespace = pod["metadata"].get("namespace", "default")
        self.pods[(namespace, pod["metadata"]["name"])] = self._admit(pod, kind="pods", namespace=namespace)
        return pod

    def add_pdb(self, pdb: dict[str, Any]) -> dict[str, Any]:
        namespace = pdb["metadata"].get("namespace", "default")
        self.pdbs[(namespace, pdb["metadata"]["name"])] = self._admit(pdb, kind="poddisruptionbudgets", namespace=namespace)
        return pdb

    def add_custom(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        namespace = obj["metadata"].get("namespace")
        key = (namespace, obj["metadata"]["name"]) if namespace is not None else obj["metadata"]["name"]
        self.custom_objects.setdefault(plural, {})[key] = self._admit(obj, kind=plural, namespace=namespace)
        return obj

    def bump(self, obj: dict[str, Any]) -> None:
        """A test changed a stored object behind the API's back: give it a new resourceVersion, as a write would."""
        obj["metadata"]["resourceVersion"] = self._version()

    # --- CoreV1Api: nodes
    def add_volume(self, name: str, *, claim: tuple[str, str], modes: list[str], node: str | None = None) -> None:
        """A PersistentVolume bound to ``claim`` (namespace, name); ``node`` pins it there (a local volume)."""
        spec: dict[str, Any] = {"accessModes": modes, "hostPath": {"path": f"/srv/{name}"}, "claimRef": {"name": claim[1]}}
        if node:
            term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
            spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [term]}}
        self.volumes[name] = {"metadata": {"name": name}, "spec": spec, "status": {"phase": "Bound"}}
        self.claims[claim] = {
            "metadata": {"name": claim[1], "namespace": claim[0]},
            "spec": {"accessModes": modes, "volumeName": name},
            "status": {"phase": "Bound", "accessModes": modes},
        }

    async def read_namespaced_persistent_volume_claim(self, name: str, namespace: str, **_: Any) -> Any:
        return self.api_client.model(
            self._found(self.claims, (namespace, name), "persistentvolumeclaims"), "V1PersistentVolumeClaim"
        )

    async def read_persistent_volume(self, name: str, **_: Any) -> Any:
        return self.api_client.model(self._found(self.volumes, name, "persistentvolumes"), "V1PersistentVolume")

    async def list_persistent_volume_claim_for_all_namespaces(self, **_: Any) -> Any:
        return self._list(list(self.claims.values()), "V1PersistentVolumeClaimList")

    async def list_persistent_volume(self, **_: Any) -> Any:
        return self._list(list(self.volumes.values()), "V1PersistentVolumeList")

    def add_namespace(self, name: str, *, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        labels = {"kubernetes.io/metadata.name": name, **(labels or {})}
        self.namespaces[name] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
        return self.namespaces[name]

    async def read_namespace(self, name: str, **_: Any) -> client.V1Namespace:
        return self.api_client.model(self._found(self.namespaces, name, "namespaces"), "V1Namespace")

    async def read_node(self, name: str, **_: Any) -> client.V1Node:
        return self.api_client.model(self._found(self.nodes, name, "nodes"), "V1Node")

    async def list_node(self, *, field_selector: str | None = None, label_selector: str | None = None, **_: Any) -> Any:
        return self._list(_select(self.nodes.values(), field_selector, label_selector), "V1NodeList")

    async def patch_node(self, name: str, body: Any, **_: Any) -> client.V1Node:
        node = self._found(self.nodes, name, "nodes")
        patch = self._plain(body)
        self.writes.append(f"patch node {name} " + " ".join(f"{k}={v}" for k, v in (patch.get("spec") or {}).items()))
        patched = merge_patch(node, {k: v for k, v in patch.items() if k != "metadata"})
        patched["metadata"] = node["metadata"]
        _replace(node, patched)
        self.bump(node)
        return self.api_client.model(node, "V1Node")

    # --- CoreV1Api: pods
    async def read_namespaced_pod(self, name: str, namespace: str, **_: Any) -> client.V1Pod:
        return self.api_client.model(self._found(self.pods, (namespace, name), "pods"), "V1Pod")

    async def list_namespaced_pod(
        self, namespace: str, *, field_selector: str | None = None, label_selector: str | None = None, **_: Any
    ) -> client.V1PodList:
        pods = [p for (ns, _name), p in self.pods.items() if ns == namespace]
        return self._list(_select(pods, field_selector, label_selector), "V1PodList")

    async def list_pod_for_all_namespaces(
        self, *, field_selector: str | None = None, label_selector: str | None = None, **_: Any
    ) -> client.V1PodList:
        return self._list(_select(self.pods.values(), field_selector, label_selector), "V1PodList")

    async def create_namespaced_pod(self, namespace: str, body: Any, **_: Any) -> client.V1Pod:
        pod = self._fresh(self._plain(body))
        if pod["metadata"].get("namespace") not in (None, namespace):
            raise api_error(400, "the namespace of the provided object does not match the namespace sent on the request")
        if (namespace, pod["metadata"].get("name")) in self.pods:
            raise api_error(409, f'pods "{pod["metadata"]["name"]}" already exists')
        pod["status"] = {"phase": "Pending"}
        self._admit(pod, kind="pods", namespace=namespace)
        if (namespace, pod["metadata"]["name"]) in self.pods:  # a generated name that is taken
            raise api_error(409, f'pods "{pod["metadata"]["name"]}" already exists')
        self.pods[(namespace, pod["metadata"]["name"])] = pod
        self.writes.append(f"create pod {namespace}/{pod['metadata']['name']}")
        return self.api_client.model(pod, "V1Pod")

    async def patch_namespaced_pod(
        self, name: str, namespace: str, body: Any, _content_type: str | None = None, **_: Any
    ) -> client.V1Pod:
        """A JSON patch of a pod (``test`` ops are preconditions), held to the API server's pod update rules."""
        pod = self._found(self.pods, (namespace, name), "pods")
        if not isinstance(body, list) or _content_type != JSON_PATCH:
            raise api_error(
                400, f"the fake patches pods with a JSON patch list only (got {type(body).__name__}, {_content_type})"
            )
        try:
            patched = json_patch(pod, body)
        except ValueError as exc:
            raise api_error(422, str(exc)) from None
        if why := _forbidden_pod_update(pod, patched):
            raise api_error(422, f'Pod "{name}" is invalid: {why}')
        self.writes.append(f"patch pod {namespace}/{name} " + " ".join(str(op["path"]) for op in body if op["op"] != "test"))
        _replace(pod, patched)
        self.bump(pod)
        return self.api_client.model(pod, "V1Pod")

    async def delete_namespaced_pod(
        self, name: str, namespace: str, *, body: Any = None, grace_period_seconds: int | None = None, **_: Any
    ) -> client.V1Pod:
        pod = self._found(self.pods, (namespace, name), "pods")
        options = self._plain(body) if body is not None else {}
        uid = (options.get("preconditions") or {}).get("uid")
        if uid and uid != pod["metadata"]["uid"]:
            raise api_error(
                409,
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: {pod['metadata']['uid']}",
            )
        grace = options.get("gracePeriodSeconds", grace_period_seconds)
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        self.writes.append(f"delete pod {namespace}/{name}")
        finished = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if grace == 0 or not pod["spec"].get("nodeName") or finished:
            del self.pods[(namespace, name)]
        elif not pod["metadata"].get("deletionTimestamp"):
            pod["metadata"]["deletionTimestamp"] = self.timestamp(delay=grace)
            pod["metadata"]["deletionGracePeriodSeconds"] = grace
            self.bump(pod)
        return self.api_client.model(pod, "V1Pod")

    async def create_namespaced_pod_eviction(
        self, name: str, namespace: str, body: Any, dry_run: str | None = None, **_: Any
    ) -> client.V1Status:
        pod = self._found(self.pods, (namespace, name), "pods")
        labels = pod["metadata"].get("labels") or {}
        for (ns, _name), budget in self.pdbs.items():
            selector = ((budget.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            allowed = int((budget.get("status") or {}).get("disruptionsAllowed") or 0)
            if ns == namespace and all(labels.get(k) == v for k, v in selector.items()) and allowed < 1:
                raise api_error(
                    429, f"Cannot evict pod as it would violate the pod's disruption budget ({budget['metadata']['name']})"
                )
        if dry_run:
            if self.dry_runs_refused:
                raise api_error(429, self.dry_runs_refused)
            self.dry_run_evictions.append(f"{namespace}/{name}")
            return client.V1Status(status="Success")
        if self.evictions_refused:
            self.evictions_refused -= 1
            raise api_error(429, "Cannot evict pod as it would violate the pod's disruption budget.")
        self.writes.append(f"evict {namespace}/{name}")
        del self.pods[(namespace, name)]
        return client.V1Status(status="Success")

    # --- CoreV1Api: secrets (the checkpoint pull Secret's copies, migrator/pullsecrets.py)
    def add_secret(self, secret: dict[str, Any]) -> dict[str, Any]:
        meta = secret["metadata"]
        self.secrets[(meta["namespace"], meta["name"])] = self._admit(secret, kind="secrets", namespace=meta["namespace"])
        return secret

    async def read_namespaced_secret(self, name: str, namespace: str, **_: Any) -> client.V1Secret:
        return self.api_client.model(self._found(self.secrets, (namespace, name), "secrets"), "V1Secret")

    async def create_namespaced_secret(self, namespace: str, body: Any, **_: Any) -> client.V1Secret:
        secret = self._fresh(self._plain(body))
        if (namespace, secret["metadata"]["name"]) in self.secrets:
            raise api_error(409, f'secrets "{secret["metadata"]["name"]}" already exists')
        self.writes.append(f"create secret {namespace}/{secret['metadata']['name']}")
        return self.api_client.model(
            self.add_secret({**secret, "metadata": {**secret["metadata"], "namespace": namespace}}), "V1Secret"
        )

    async def replace_namespaced_secret(self, name: str, namespace: str, body: Any, **_: Any) -> client.V1Secret:
        current = self._found(self.secrets, (namespace, name), "secrets")
        secret = self._plain(body)
        if secret["metadata"].get("resourceVersion") not in (None, current["metadata"]["resourceVersion"]):
            raise api_error(409, f'secrets "{name}": the object has been modified')
        secret["metadata"] = {**current["metadata"], **secret["metadata"], "resourceVersion": self._version()}
        self.secrets[(namespace, name)] = secret
        self.writes.append(f"replace secret {namespace}/{name}")
        return self.api_client.model(secret, "V1Secret")

    async def delete_namespaced_secret(self, name: str, namespace: str, *, body: Any = None, **_: Any) -> client.V1Status:
        current = self._found(self.secrets, (namespace, name), "secrets")
        wanted = ((self._plain(body) if body is not None else {}).get("preconditions") or {}).get("resourceVersion")
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            raise api_error(409, f'secrets "{name}": precondition failed')
        del self.secrets[(namespace, name)]
        self.writes.append(f"delete secret {namespace}/{name}")
        return client.V1Status(status="Success")

    # --- CoreV1Api: events
    async def create_namespaced_event(self, namespace: str, body: Any, **_: Any) -> client.CoreV1Event:
        event = self._admit(self._fresh(self._plain(body)), kind="events", namespace=namespace)
        self.events.append(event)
        return self.api_client.model(event, "CoreV1Event")

    async def list_namespaced_event(self, namespace: str, *, field_selector: str | None = None, **_: Any) -> Any:
        events = [e for e in self.events if e["metadata"]["namespace"] == namespace]
        return self._list(_select(events, field_selector, None), "CoreV1EventList")

    def event_log(self, *, kind: str | None = None, name: str | None = None) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the Events about objects of ``kind`` (and ``name``), oldest first."""
        return [
            (e.get("type", ""), e.get("reason", ""), e.get("message", ""))
            for e in self.events
            if kind in (None, e["involvedObject"].get("kind")) and name in (None, e["involvedObject"].get("name"))
        ]

    def event_pairs(self) -> list[tuple[str, str]]:
        """(reason, message) of every Event."""
        return [(e.get("reason", ""), e.get("message", "")) for e in self.events]

    # --- PolicyV1Api
    async def list_namespaced_pod_disruption_budget(self, namespace: str, **_: Any) -> Any:
        budgets = [b for (ns, _name), b in self.pdbs.items() if ns == namespace]
        return self._list(budgets, "V1PodDisruptionBudgetList")

    # --- CustomObjectsApi
    def _custom(self, plural: str, key: Any) -> dict[str, Any]:
        return self._found(self.custom_objects.setdefault(plural, {}), key, plural)

    def _create_custom(self, group: str, version: str, namespace: str | None, plural: str, body: Any) -> dict[str, Any]:
        obj = self._fresh(self._plain(body))
        if obj.get("apiVersion") not in (None, f"{group}/{version}"):
            raise api_error(400, f"apiVersion {obj.get('apiVersion')} does not match {group}/{version}")
        obj.pop("status", None)  # the status subresource: a create does not set it
        name = obj["metadata"].get("name")
        key = (namespace, name) if namespace is not None else name
        table = self.custom_objects.setdefault(plural, {})
        if name and key in table:
            raise api_error(409, f'{plural}.{group} "{name}" already exists')
        self._admit(obj, kind=plural, namespace=namespace)
        name = obj["metadata"]["name"]
        table[(namespace, name) if namespace is not None else name] = obj
        self.writes.append(f"create {plural.removesuffix('s')} {namespace + '/' if namespace else ''}{name}")
        return copy.deepcopy(obj)

    def _patch_custom(self, plural: str, key: Any, body: Any, content_type: str | None, *, status: bool) -> dict[str, Any]:
        obj = self._custom(plural, key)
        if isinstance(body, list):
            patched = json_patch(obj, body)
        elif content_type == MERGE_PATCH:
            patched = merge_patch(obj, body)
        else:
            # kubernetes-asyncio sends a dict body as application/json-patch+json unless told otherwise.
            raise api_error(
                400, f"a {type(body).__name__} body sent as {content_type or JSON_PATCH} is not a JSON patch (_content_type?)"
            )
        meta, wanted = obj["metadata"], (patched.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != meta["resourceVersion"]:
            raise api_error(
                409,
                f'Operation cannot be fulfilled on {plural} "{meta["name"]}": the object has been modified; '
                "please apply your changes to the latest version and try again",
            )
        if status:  # the status subresource changes status only
            new = {**copy.deepcopy(obj), "status": patched.get("status")}
        else:  # the object itself: everything but status and what only the API server sets
            new = {**patched, "status": copy.deepcopy(obj.get("status"))}
            fixed = ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "generation")
            new["metadata"] = {**(patched.get("metadata") or {}), **{k: meta[k] for k in fixed if k in meta}}
            for k in fixed:
                if k not in meta:
                    new["metadata"].pop(k, None)
            if meta.get("deletionTimestamp") and set(new["metadata"].get("finalizers") or []) - set(meta.get("finalizers") or []):
                raise api_error(422, "no new finalizers can be added if the object is being deleted")
        if new.get("status") is None:
            new.pop("status", None)
        new["metadata"]["resourceVersion"] = self._version()
        _replace(obj, new)
        if meta.get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
            del self.custom_objects[plural][key]
        return copy.deepcopy(obj)

    def delete_custom(self, plural: str, key: Any) -> dict[str, Any]:
        """A delete as the API server does it: with finalizers left the object only gets a deletionTimestamp."""
        obj = self._custom(plural, key)
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = self.timestamp()
                self.bump(obj)
        else:
            del self.custom_objects[plural][key]
        return copy.deepcopy(obj)

    async def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **_: Any
    ) -> Any:
        return copy.deepcopy(self._custom(plural, (namespace, name)))

    async def get_cluster_custom_object(self, group: str, version: str, plural: str, name: str, **_: Any) -> Any:
        return copy.deepcopy(self._custom(plural, name))

    async def list_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, *, label_selector: str | None = None,
        field_selector: str | None = None, **_: Any,
    ) -> Any:  # fmt: skip
        objs = [o for k, o in self.custom_objects.get(plural, {}).items() if isinstance(k, tuple) and k[0] == namespace]
        return {
            "items": copy.deepcopy(_select(objs, field_selector, label_selector)),
            "metadata": {"resourceVersion": self._version()},
        }

    async def list_cluster_custom_object(
        self, group: str, version: str, plural: str, *, label_selector: str | None = None, field_selector: str | None = None,
        **_: Any,
    ) -> Any:  # fmt: skip
        objs = list(self.custom_objects.get(plural, {}).values())
        return {
            "items": copy.deepcopy(_select(objs, field_selector, label_selector)),
            "metadata": {"resourceVersion": self._version()},
        }

    async def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any, **_: Any
    ) -> Any:
        return self._create_custom(group, version, namespace, plural, body)

    async def create_cluster_custom_object(self, group: str, version: str, plural: str, body: Any, **_: Any) -> Any:
        return self._create_custom(group, version, None, plural, body)

    async def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any, _content_type: str | None = None,
        **_: Any,
    ) -> Any:  # fmt: skip
        return self._patch_custom(plural, (namespace, name), body, _content_type, status=False)

    async def patch_namespaced_custom_object_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any, _content_type: str | None = None,
        **_: Any,
    ) -> Any:  # fmt: skip
        return self._patch_custom(plural, (namespace, name), body, _content_type, status=True)

    async def patch_cluster_custom_object(
        self, group: str, version: str, plural: str, name: str, body: Any, _content_type: str | None = None, **_: Any
    ) -> Any:
        return self._patch_custom(plural, name, body, _content_type, status=False)

    async def patch_cluster_custom_object_status(
        self, group: str, version: str, plural: str, name: str, body: Any, _content_type: str | None = None, **_: Any
    ) -> Any:
        return self._patch_custom(plural, name, body, _content_type, status=True)

    async def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **_: Any
    ) -> Any:
        self._custom(plural, (namespace, name))
        self.writes.append(f"delete {plural.removesuffix('s')} {namespace}/{name}")
        return self.delete_custom(plural, (namespace, name))

    async def delete_cluster_custom_object(self, group: str, version: str, plural: str, name: str, **_: Any) -> Any:
        self._custom(plural, name)
        self.writes.append(f"delete {plural.removesuffix('s')} {name}")
        return self.delete_custom(plural, name)


# --- objects --------------------------------------------------------------------------------------
def image_id(image: str) -> str:
    """What a kubelet reports as a container's imageID: the repository pinned by digest."""
    repository = image.split("@", 1)[0]
    name_start = repository.rfind("/") + 1
    if ":" in repository[name_start:]:
        repository = repository[: repository.rfind(":")]
    return f"{repository}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def make_node(
    name: str, *, cpu: str = "4", memory: str = "8Gi", pods: str = "110", ready: bool = True, unschedulable: bool = False,
    labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None, runtime: str = "cri-o://1.30.0",
) -> dict[str, Any]:  # fmt: skip
    spec: dict[str, Any] = {}
    if unschedulable:
        spec["unschedulable"] = True
    if taints:
        spec["taints"] = taints
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": spec,
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "allocatable": {"cpu": cpu, "memory": memory, "pods": pods},
            "addresses": [{"type": "InternalIP", "address": f"127.0.9.{sum(name.encode()) % 250 + 1}"}],
            "nodeInfo": {"containerRuntimeVersion": runtime},
        },
    }


def make_pod(
    name: str, *, namespace: str = "shop", node: str | None = "node-1", images: Mapping[str, str] | None = None,
    owner: tuple[str, str] | None = None, labels: dict[str, str] | None = None, cpu: str = "100m", memory: str = "64Mi",
    phase: str = "Running", ready: bool = True, **spec: Any,
) -> dict[str, Any]:  # fmt: skip
    """A pod as the API server would show it; Running pods carry the statuses a kubelet reports (image IDs)."""
    images = images or {"app": f"registry.local/{namespace}/{name.split('-')[0]}:1.0"}
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels or {"app": name.split("-")[0]}}
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": "v1" if owner[0] == "Node" else "apps/v1",
                "kind": owner[0],
                "name": owner[1],
                "uid": f"uid-{owner[1]}",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            **({"nodeName": node} if node else {}),
            "terminationGracePeriodSeconds": 30,
            "containers": [
                {"name": c, "image": image, "resources": {"requests": {"cpu": cpu, "memory": memory}}}
                for c, image in images.items()
            ],
            **spec,
        },
        "status": {"phase": phase},
    }
    if phase == "Running":
        Kubelet.set_running(pod, ready=ready, at="2026-01-01T00:00:00Z")
    return pod


# --- the world around the API server ------------------------------------------------------------
class Kubelet:
    """The nodes' kubelets (and the scheduler), on the test's command: what they would write into pods."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        pod = self.kube.pods.get((namespace, name))
        assert pod is not None, f"no pod {namespace}/{name} (pods: {sorted(self.kube.pods)})"
        return pod

    @staticmethod
    def set_running(pod: dict[str, Any], *, ready: bool, at: str) -> None:
        ready_text = "True" if ready else "False"
        pod["status"] = {
            "phase": "Running",
            "hostIP": "127.0.9.1",
            "podIP": f"10.244.0.{sum(pod['metadata']['name'].encode()) % 250 + 1}",
            "startTime": at,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": ready_text},
                {"type": "Ready", "status": ready_text},
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": image_id(c["image"]),
                    "containerID": f"cri-o://{hashlib.sha256((pod['metadata'].get('uid', '') + c['name']).encode()).hexdigest()}",
                    "ready": ready,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": at}},
                }
                for c in pod["spec"]["containers"]
            ],
        }

    def start(self, namespace: str, name: str, *, ready: bool = True) -> dict[str, Any]:
        """The pod's containers run (restored or started); Ready unless ``ready=False``."""
        pod = self.pod(namespace, name)
        assert pod["spec"].get("nodeName"), f"pod {namespace}/{name} is not bound to a node"
        self.set_running(pod, ready=ready, at=self.kube.timestamp())
        self.kube.bump(pod)
        return pod

    def fail(
        self, namespace: str, name: str, *, reason: str = "CreateContainerError", message: str = "restore failed",
        container: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """A container cannot be created or started: it waits with ``reason`` (what ``kubectl get pod`` shows)."""
        pod = self.pod(namespace, name)
        statuses = []
        for c in pod["spec"]["containers"]:
            failed = container in (None, c["name"])
            state = (
                {"waiting": {"reason": reason, "message": message}}
                if failed
                else {"running": {"startedAt": self.kube.timestamp()}}
            )
            statuses.append({"name": c["name"], "image": c["image"], "imageID": "" if failed else image_id(c["image"]),
                             "ready": not failed, "started": not failed, "restartCount": 0, "state": state})  # fmt: skip
        pod["status"] = {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
            "containerStatuses": statuses,
        }
        self.kube.bump(pod)
        return pod

    def pull_images(self, namespace: str, name: str) -> dict[str, Any]:
        """The images are pulled; the containers then fail to start (a prepull pod's command does not exist)."""
        pod = self.pod(namespace, name)
        pod["status"] = {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": image_id(c["image"]),
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 128, "reason": "StartError", "message": "no such file or directory"}},
                }
                for c in pod["spec"]["containers"]
            ],
        }
        self.kube.bump(pod)
        return pod

    def fail_pull(self, namespace: str, name: str, *, message: str = "manifest unknown") -> dict[str, Any]:
        return self.fail(namespace, name, reason="ErrImagePull", message=message)

    def terminate(self, namespace: str, name: str) -> None:
        """A terminating pod's containers have stopped: the pod object goes."""
        pod = self.pod(namespace, name)
        assert pod["metadata"].get("deletionTimestamp"), f"pod {namespace}/{name} is not terminating"
        del self.kube.pods[(namespace, name)]

    def schedule(self, namespace: str, name: str, node: str) -> dict[str, Any]:
        """The scheduler binds an unbound pod."""
        pod = self.pod(namespace, name)
        assert not pod["spec"].get("nodeName"), f"pod {namespace}/{name} is bound already"
        assert not pod["spec"].get("schedulingGates"), f"pod {namespace}/{name} is gated: the scheduler does not bind it"
        labels = self.kube.nodes[node]["metadata"].get("labels") or {}
        selector = pod["spec"].get("nodeSelector") or {}
        assert all(labels.get(k) == v for k, v in selector.items()), f"node {node} does not match nodeSelector {selector}"
        pod["spec"]["nodeName"] = node
        self.kube.bump(pod)
        return pod


async def through_webhook(pod: Mapping[str, Any], *, kube: FakeKube, namespace: str) -> tuple[dict[str, Any], Slot | None]:
    """A pod creation passing podmigrate's mutating webhook: the pod as it will be created, and the slot it claimed.

    As ``Webhook.mutate_pods`` decides: a PodMigration's restore slot first, then the place of a pod a
    PodCheckpoint suspends (held: gated); warm starts are not played here (``tests/migrator/test_warmstart.py``).
    """
    slot = await slots.claim(kube, pod, namespace=namespace)  # type: ignore[arg-type]
    if slot is not None:
        return json_patch(pod, restore_patch(pod, slot)), slot
    hold = await slots.claim(kube, pod, namespace=namespace, resource=api.PODCHECKPOINTS)  # type: ignore[arg-type]
    if hold is not None:
        return json_patch(pod, hold_patch(pod, hold)), hold
    return copy.deepcopy(dict(pod)), None


class FakeAgents:
    """The node agents behind ``agentapi.client.AgentClient``'s interface, recording every call.

    ``calls`` holds ``(operation, node, what)`` in order: ``("checkpoint", "node-1", "shop/web")``,
    ``("kill", ...)``, ``("thaw", ...)``, ``("delete_image", "node-1", image)``. ``errors[operation]``
    makes that operation raise the given ``AgentError`` (until removed; a checkpoint failing at the
    checkpoint or push stage leaves the pod frozen, as the agent does); ``during_checkpoint`` is
    awaited inside a checkpoint call (the world changing while the pod is being frozen). ``frozen``
    is the pods frozen now: checkpointed and neither thawed nor killed.
    """

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.calls: list[tuple[str, str, str]] = []
        self.requests: list[contract.CheckpointRequest] = []
        self.traceparents: list[str | None] = []
        self.errors: dict[str, AgentError] = {}
        self.during_checkpoint: Callable[[], Awaitable[None]] | None = None
        self.frozen: set[str] = set()  # namespace/pod
        self.killed: set[str] = set()
        self.staged: dict[tuple[str, str], str] = {}  # (node, namespace/pod) -> volume-data image
        self.without_hook: set[str] = set()  # nodes whose CRIU configuration lacks podmigrate's pre-restore hook
        self.lapsed: set[str] = set()  # namespace/pod whose freeze lease lapsed: the agent thawed them
        self.lapse_after_checkpoint: set[str] = set()  # namespace/pod whose lease will lapse right after its checkpoint
        self.leases: dict[str, int] = {}  # namespace/pod -> seconds last granted or renewed

    def _call(self, operation: str, node: Mapping[str, Any], what: str, traceparent: str | None) -> None:
        self.calls.append((operation, str(node["metadata"]["name"]), what))
        self.traceparents.append(traceparent)

    def operations(self) -> list[str]:
        return [c[0] for c in self.calls]

    async def checkpoint(
        self, *, node: Mapping[str, Any], request: contract.CheckpointRequest, traceparent: str | None
    ) -> contract.CheckpointResponse:
        key = f"{request.namespace}/{request.pod}"
        self._call("checkpoint", node, key, traceparent)
        self.requests.append(request)
        if self.during_checkpoint is not None:
            await self.during_checkpoint()
        if "checkpoint" in self.errors:
            error = self.errors["checkpoint"]
            if request.freeze and error.stage in ("checkpoint", "push"):
                self.frozen.add(key)  # it failed after the freeze: the pod stays frozen until thawed
            raise error
        pod = self.kube.pods.get((request.namespace, request.pod))
        if pod is None or pod["spec"].get("nodeName") != node["metadata"]["name"]:
            raise AgentError(f"pod {key} not found on node {node['metadata']['name']}", status=404)
        containers = [c for c in pod["spec"]["containers"] if request.containers is None or c["name"] in request.containers]
        checkpoints = []
        for c in containers:
            tag = request.tag_for(c["name"], multiple=len(containers) > 1)
            digest = "sha256:" + hashlib.sha256(f"{request.image_repository}:{tag}".encode()).hexdigest()
            checkpoints.append(
                contract.ContainerCheckpoint(
                    name=c["name"],
                    image=f"{request.image_repository}@{digest}",  # as the agent answers: no tag beside the digest
                    digest=digest,
                    base_image=c["image"],
                    archive_bytes=4096,
                    image_bytes=8192,
                    timings=contract.ContainerTimings(checkpoint_s=0.1, push_s=0.02),
                )
            )
        if request.freeze:
            self.frozen.add(key)
            if request.freeze_lease_seconds:
                self.leases[key] = request.freeze_lease_seconds
            if key in self.lapse_after_checkpoint:  # the controller stalls before its first renewal
                self.lapse(request.namespace, request.pod)
        volume_data = None
        if request.volumes:
            digest = "sha256:" + hashlib.sha256(f"{request.image_repository}:{request.volume_tag}".encode()).hexdigest()
            volume_data = contract.VolumeDataCheckpoint(
                image=f"{request.image_repository}@{digest}", digest=digest, volumes=tuple(v.name for v in request.volumes),
                data_bytes=1 << 20, capture_s=0.01, push_s=0.01,
            )  # fmt: skip
        return contract.CheckpointResponse(
            frozen=request.freeze, containers=tuple(checkpoints), freeze_s=0.001, total_s=0.2, volume_data=volume_data
        )

    async def abort_checkpoint(self, *, node: Mapping[str, Any], request_id: str, traceparent: str | None) -> None:
        self._call("abort_checkpoint", node, request_id, traceparent)

    def lapse(self, namespace: str, pod: str) -> None:
        """The control service stopped renewing: the agent thaws the pod and will refuse to kill it."""
        key = f"{namespace}/{pod}"
        self.frozen.discard(key)
        self.lapsed.add(key)

    async def renew_freeze(self, *, node: Mapping[str, Any], namespace: str, pod: str, seconds: int) -> None:
        key = f"{namespace}/{pod}"
        self._call("renew_freeze", node, key, None)
        if key in self.lapsed:
            raise AgentError(f"the freeze of {key} lapsed and the pod was thawed", status=409, stage="freeze")
        self.leases[key] = seconds

    async def stage_volumes(
        self, *, node: Mapping[str, Any], request: contract.StageRequest, traceparent: str | None
    ) -> contract.StageResponse:
        self._call("stage_volumes", node, f"{request.namespace}/{request.pod}", traceparent)
        if "stage_volumes" in self.errors:
            raise self.errors["stage_volumes"]
        self.staged[(str(node["metadata"]["name"]), f"{request.namespace}/{request.pod}")] = request.image
        return contract.StageResponse(volumes=("data",), data_bytes=1 << 20, seconds=0.01)

    async def restored_volumes(self, *, node: Mapping[str, Any], namespace: str, pod: str) -> list[str]:
        """As the node's CRIU hook leaves it: the pod of that name on this node restored with the staged files."""
        name = str(node["metadata"]["name"])
        if (name, f"{namespace}/{pod}") not in self.staged or name in self.without_hook:
            return []
        found = self.kube.pods.get((namespace, pod))
        return [found["metadata"]["uid"]] if found and found["spec"].get("nodeName") == name else []

    async def unstage_volumes(self, *, node: Mapping[str, Any], namespace: str, pod: str, traceparent: str | None) -> None:
        self._call("unstage_volumes", node, f"{namespace}/{pod}", traceparent)
        self.staged.pop((str(node["metadata"]["name"]), f"{namespace}/{pod}"), None)

    async def thaw(self, *, node: Mapping[str, Any], namespace: str, pod: str, traceparent: str | None) -> None:
        self._call("thaw", node, f"{namespace}/{pod}", traceparent)
        if "thaw" in self.errors:
            raise self.errors["thaw"]
        self.frozen.discard(f"{namespace}/{pod}")

    async def kill(self, *, node: Mapping[str, Any], namespace: str, pod: str, traceparent: str | None) -> list[str]:
        key = f"{namespace}/{pod}"
        self._call("kill", node, key, traceparent)
        if "kill" in self.errors:
            raise self.errors["kill"]
        if key in self.lapsed:
            raise AgentError(f"the freeze of {key} lapsed (the control service stopped renewing it) and the pod was thawed",
                             status=409, stage="freeze")  # fmt: skip
        if key not in self.frozen:
            raise AgentError(f"pod {key} is not frozen: the agent kills only frozen containers", status=409)
        self.frozen.discard(key)
        self.killed.add(key)
        found = self.kube.pods.get((namespace, pod))
        return [c["name"] for c in found["spec"]["containers"]] if found else []

    async def delete_image(self, *, node: Mapping[str, Any], image: str, traceparent: str | None) -> None:
        self._call("delete_image", node, image, traceparent)
        if "delete_image" in self.errors:
            raise self.errors["delete_image"]


class FakeClock:
    """``migrator.units.now`` for tests: stands still until told to move."""

    def __init__(self, start: datetime = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


def use_clock(monkeypatch: pytest.MonkeyPatch, clock: Callable[[], datetime]) -> None:
    """Make ``clock`` the time of ``migrator.units.now`` and of every loaded migrator module that imported it."""
    original = units.now
    monkeypatch.setattr(units, "now", clock)
    for name, module in list(sys.modules.items()):
        if (name == "migrator" or name.startswith("migrator.")) and getattr(module, "now", None) is original:
            monkeypatch.setattr(module, "now", clock)
