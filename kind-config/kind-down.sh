#!/usr/bin/env bash
# kind-down.sh - remove what kind-up.sh made: the kind cluster, the registry container (and with it
# every checkpoint image still stored), the nodes' network and the overlay it wrote. Images stay in
# the engine's store (the node image and podmigrate's take minutes to build); remove them with
# `docker rmi podmigrate/kind-node:<version> 127.0.0.1:5001/podmigrate:kind` if wanted. `make kind-down`.
# Each step is skipped when there is nothing to remove, so it is safe to run twice.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "kind-down: $*" >&2; }

cluster="$(sed -n 's/^name:[[:space:]]*\([a-z0-9.-]*\).*/\1/p' "$here/cluster.yaml" | head -n1)"
kind_version="$(sed -n 's|^[[:space:]]*\(require[[:space:]]\+\)\?sigs\.k8s\.io/kind[[:space:]]\+\(v[0-9][^[:space:]]*\).*$|\2|p' "$here/validate/go.mod" | head -n1)"
network=podmigrate-kind
registry=podmigrate-registry
state="${KIND_STATE:-$here/.state}"

engine="${KIND_ENGINE:-}"
if [[ -z "$engine" ]]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker
    elif command -v podman >/dev/null; then engine=podman
    else log "no container engine: nothing to remove"; rm -rf "$state"; exit 0
    fi
fi
if [[ -n "${KIND:-}" ]]; then kind="$KIND"
elif command -v kind >/dev/null; then kind=kind
else kind="${PODMIGRATE_CACHE:-$HOME/.cache/podmigrate}/kind-$kind_version/bin/kind"
fi
[[ $engine == podman ]] && export KIND_EXPERIMENTAL_PROVIDER=podman

if [[ -x "$(command -v "$kind" || true)" ]] && "$kind" get clusters 2>/dev/null | grep -qx "$cluster"; then
    log "deleting cluster $cluster"
    "$kind" delete cluster --name "$cluster" >&2
fi
if "$engine" container inspect "$registry" >/dev/null 2>&1; then
    log "removing $registry (and the checkpoint images it holds)"
    "$engine" rm -f -v "$registry" >/dev/null
fi
# Only once nothing is attached: kind-up.sh's network, never one it did not make.
if "$engine" network inspect "$network" >/dev/null 2>&1; then
    log "removing network $network"
    "$engine" network rm "$network" >/dev/null
fi
rm -rf "$state"
log "done"
