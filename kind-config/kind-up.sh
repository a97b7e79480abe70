#!/usr/bin/env bash
# kind-up.sh - a kind cluster whose nodes can checkpoint and restore pods, with podmigrate installed
# from the same manifests as everywhere else (manifests/, through kind-config/overlay). `make kind-up`.
#
# Steps (each skipped when already done, so a second run only refreshes podmigrate):
#   1. the node image: kindest/node of the project's Kubernetes version (pulled, or built by
#      `kind build node-image` from the release when it is not published), plus containerd 2.3.7,
#      CRIU 4.2.1 and the CRIU config with podmigrate's hook (node-image/);
#   2. the nodes' network with a non-private subnet (kind's own would be 172.18.x or 10.89.x);
#   3. a registry container on it: podmigrate's image and the checkpoint images;
#   4. the cluster (cluster.yaml), its kubelets' serving certificates approved, each node checked
#      (`criu check`, containerd's version);
#   5. podmigrate's image (Containerfile) pushed to the registry; the overlay naming it by digest;
#      `kubectl apply -k`; rollout.
#
# Needs: docker (or podman: KIND_ENGINE=podman), kind (KIND=path; kind-config/build.sh kind builds the
# pinned version), kubectl, curl. Settings (environment):
#   KIND_ENGINE            docker | podman (default: docker if its daemon answers, else podman)
#   KIND, KUBECTL          the binaries (default: from PATH)
#   KIND_BASE_NODE_IMAGE   default docker.io/kindest/node:<k8s version of localcluster/k8s-binaries/go.mod>
#   KIND_NODE_IMAGE        default podmigrate/kind-node:<k8s version>; when set and already in the engine's
#                          store, used as it is (built once, elsewhere or by hand: no build, no pull)
#   KIND_NODE_SUBNET       the nodes' network, default 100.65.0.0/24 (never 10/8, 172.16/12, 192.168/16)
#   KIND_REGISTRY_PORT     the registry on the host's loopback, default 5001
#   PODMIGRATE_IMAGE       use this image (name@sha256:..., pullable by the nodes) instead of building one
#   KIND_IMAGE_BUILDER     engine (default: Containerfile with the engine) | imagebuild (`python -m imagebuild`,
#                          no engine and no base image: Debian's Python and PyPI wheels, pushed to the registry)
#   KIND_STATE             where the overlay is written, default kind-config/.state
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
log() { echo "kind-up: $*" >&2; }
die() { echo "kind-up: ERROR: $*" >&2; exit 1; }

modver() {  # modver GO.MOD MODULE -> the version GO.MOD requires
    sed -n "s|^[[:space:]]*\(require[[:space:]]\+\)\?${2//./\\.}[[:space:]]\+\(v[0-9][^[:space:]]*\).*$|\2|p" "$1" | head -n1
}

# Refuse a private IPv4 range: it collides with the networks users sit on and with what the project
# may use. A CIDR whose base lies outside 10/8, 172.16/12 and 192.168/16 and is at least a /8 cannot
# reach into them except 0.0.0.0/n for n < 8, which is refused too.
is_private_cidr() {
    local cidr=$1 a b rest prefix
    [[ "$cidr" =~ ^([0-9]+)\.([0-9]+)\.[0-9]+\.[0-9]+/([0-9]+)$ ]] || return 0
    a=${BASH_REMATCH[1]} b=${BASH_REMATCH[2]} prefix=${BASH_REMATCH[3]}
    (( prefix < 8 || a == 10 || (a == 172 && b >= 16 && b <= 31) || (a == 192 && b == 168) ))
}

cluster="$(sed -n 's/^name:[[:space:]]*\([a-z0-9.-]*\).*/\1/p' "$here/cluster.yaml" | head -n1)"
[[ -n "$cluster" ]] || die "no name: in $here/cluster.yaml"
k8s_version="$(modver "$repo/localcluster/k8s-binaries/go.mod" k8s.io/kubernetes)"
containerd_version="$(modver "$repo/localcluster/realnode/go/go.mod" github.com/containerd/containerd/v2)"
kind_version="$(modver "$here/validate/go.mod" sigs.k8s.io/kind)"
[[ -n "$k8s_version" && -n "$containerd_version" && -n "$kind_version" ]] || die "cannot read the pinned versions from the go.mod files"

base_image="${KIND_BASE_NODE_IMAGE:-docker.io/kindest/node:$k8s_version}"
node_image="${KIND_NODE_IMAGE:-podmigrate/kind-node:$k8s_version}"
network=podmigrate-kind
node_subnet="${KIND_NODE_SUBNET:-100.65.0.0/24}"
registry=podmigrate-registry      # the name nodes resolve; node-image/hosts.toml and overlay/ use it
registry_port="${KIND_REGISTRY_PORT:-5001}"
registry_image="${KIND_REGISTRY_IMAGE:-docker.io/library/registry:2}"
state="${KIND_STATE:-$here/.state}"
kubectl="${KUBECTL:-kubectl}"
context="kind-$cluster"

# ---------------------------------------------------------------- tools
engine="${KIND_ENGINE:-}"
if [[ -z "$engine" ]]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker
    elif command -v podman >/dev/null; then engine=podman
    else die "no container engine: kind needs docker (with a running daemon) or podman"
    fi
fi
"$engine" info >/dev/null 2>&1 || die "'$engine info' fails: is the $engine daemon running?"
if [[ -n "${KIND:-}" ]]; then kind="$KIND"
elif command -v kind >/dev/null; then kind=kind
elif [[ -x "${PODMIGRATE_CACHE:-$HOME/.cache/podmigrate}/kind-$kind_version/bin/kind" ]]; then
    kind="${PODMIGRATE_CACHE:-$HOME/.cache/podmigrate}/kind-$kind_version/bin/kind"
else die "kind not found: go install sigs.k8s.io/kind@$kind_version (or bash kind-config/build.sh kind), or set KIND"
fi
command -v "$kubectl" >/dev/null || die "kubectl not found (set KUBECTL)"
command -v curl >/dev/null || die "curl not found"
"$kind" version | grep -q "kind $kind_version " \
    || log "warning: $("$kind" version) is not kind $kind_version, the version cluster.yaml is validated with"
# kind's podman provider is experimental and chosen by this variable; the network kind would create
# gets an automatic (private) IPv4 range, so kind is pointed at the one made below.
if [[ $engine == podman ]]; then
    export KIND_EXPERIMENTAL_PROVIDER=podman KIND_EXPERIMENTAL_PODMAN_NETWORK="$network"
else
    export KIND_EXPERIMENTAL_DOCKER_NETWORK="$network"
fi
is_private_cidr "$node_subnet" && die "KIND_NODE_SUBNET=$node_subnet is (or overlaps) a private range"

# ---------------------------------------------------------------- 1. node image
if [[ -n "${KIND_NODE_IMAGE:-}" ]] && "$engine" image inspect "$node_image" >/dev/null 2>&1; then
    log "using the node image $node_image as it is (KIND_NODE_IMAGE)"
else
    if ! "$engine" image inspect "$base_image" >/dev/null 2>&1; then
        log "pulling $base_image"
        if ! "$engine" pull "$base_image" >&2; then
            # kind publishes kindest/node for a few patch releases per kind release; any other one is
            # built from the Kubernetes release binaries (downloaded from dl.k8s.io) by kind itself.
            [[ $engine == docker ]] || die "$base_image cannot be pulled, and kind builds node images with docker only: build it there (kind build node-image $k8s_version --image $base_image) and load it into podman"
            log "$base_image is not published: kind build node-image $k8s_version"
            "$kind" build node-image "$k8s_version" --image "$base_image" >&2
        fi
    fi
    log "building $node_image (containerd $containerd_version, CRIU, podmigrate's CRIU hook) from $base_image"
    bash "$here/node-image/build.sh" --engine "$engine" --base "$base_image" --tag "$node_image" >/dev/null
fi

# ---------------------------------------------------------------- 2. network
if "$engine" network inspect "$network" >/dev/null 2>&1; then
    if [[ $engine == podman ]]; then
        subnets="$(podman network inspect -f '{{range .Subnets}}{{.Subnet}} {{end}}' "$network")"
    else
        subnets="$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' "$network")"
    fi
    for s in $subnets; do
        [[ $s == *:* ]] && continue   # IPv6: not used by this ipv4 cluster
        is_private_cidr "$s" && die "network $network exists with the private subnet $s: remove it (kind-down.sh) first"
    done
else
    log "creating network $network ($node_subnet)"
    "$engine" network create --driver bridge --subnet "$node_subnet" "$network" >/dev/null
fi

# ---------------------------------------------------------------- 3. registry
if ! "$engine" container inspect "$registry" >/dev/null 2>&1; then
    log "starting $registry ($registry_image) on $network, published on 127.0.0.1:$registry_port"
    # Deletes enabled: podmigrate deletes each checkpoint image once its migration is done.
    "$engine" run -d --restart=always --name "$registry" --network "$network" \
        -p "127.0.0.1:$registry_port:5000" -e REGISTRY_STORAGE_DELETE_ENABLED=true "$registry_image" >/dev/null
elif [[ "$("$engine" container inspect -f '{{.State.Running}}' "$registry")" != true ]]; then
    "$engine" start "$registry" >/dev/null
fi

# ---------------------------------------------------------------- 4. cluster
if "$kind" get clusters 2>/dev/null | grep -qx "$cluster"; then
    log "cluster $cluster exists"
else
    log "creating cluster $cluster ($engine, $node_image)"
    "$kind" create cluster --config "$here/cluster.yaml" --image "$node_image" --wait 3m >&2
fi
nodes="$("$kind" get nodes --name "$cluster")"
# serverTLSBootstrap (cluster.yaml): each kubelet asks for a serving certificate signed by the
# cluster CA, which nothing approves by itself. Approve exactly these nodes' requests.
deadline=$((SECONDS + 180))
for node in $nodes; do
    until "$kubectl" --context "$context" get csr -o \
        jsonpath='{range .items[?(@.spec.signerName=="kubernetes.io/kubelet-serving")]}{.spec.username} {.status.conditions[*].type}{"\n"}{end}' \
        | grep -qx "system:node:$node Approved"; do
        (( SECONDS < deadline )) || die "no approved kubelet-serving certificate for $node after 180 s (kubectl get csr)"
        for csr in $("$kubectl" --context "$context" get csr -o \
            jsonpath='{range .items[?(@.spec.signerName=="kubernetes.io/kubelet-serving")]}{.metadata.name} {.spec.username} {.status.conditions}{"\n"}{end}' \
            | awk -v u="system:node:$node" '$2 == u && NF == 2 {print $1}'); do
            "$kubectl" --context "$context" certificate approve "$csr" >&2
        done
        sleep 2
    done
done
# What the node image promises, checked where it matters: on each running node.
for node in $nodes; do
    out="$("$engine" exec "$node" criu check 2>&1 || true)"
    grep -q "Looks good" <<<"$out" || die "'criu check' on $node does not say 'Looks good': $(tail -n1 <<<"$out")"
    "$engine" exec "$node" containerd --version | grep -q " $containerd_version" \
        || die "$node does not run containerd $containerd_version: $("$engine" exec "$node" containerd --version)"
done
log "nodes: $(tr '\n' ' ' <<<"$nodes")(criu check: Looks good; containerd $containerd_version)"

# ---------------------------------------------------------------- 5. podmigrate
image="${PODMIGRATE_IMAGE:-}"
if [[ -z "$image" && "${KIND_IMAGE_BUILDER:-engine}" == imagebuild ]]; then
    # The project's engine-free builder (make image): prints <registry>/<repository>@sha256:... last.
    log "building podmigrate with imagebuild, pushed to 127.0.0.1:$registry_port"
    built="$(cd "$repo" && "${PYTHON:-$repo/.venv/bin/python}" -m imagebuild --registry "127.0.0.1:$registry_port" --repository podmigrate --tag kind | tail -n1)"
    [[ "$built" == *@sha256:* ]] || die "imagebuild printed no image digest: $built"
    image="$registry:5000/podmigrate@${built##*@}"
elif [[ -z "$image" ]]; then
    version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/pyproject.toml" | head -n1)"
    revision="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
    local_ref="127.0.0.1:$registry_port/podmigrate:kind"
    log "building podmigrate $version ($revision) from Containerfile"
    "$engine" build -f "$repo/Containerfile" -t "$local_ref" \
        --build-arg "VERSION=$version" --build-arg "REVISION=$revision" "$repo" >&2
    if [[ $engine == podman ]]; then
        podman push --tls-verify=false "$local_ref" >&2
    else
        docker push "$local_ref" >&2   # docker treats 127.0.0.0/8 registries as plain HTTP
    fi
    # The digest as the registry has it (the same whatever name the nodes use for the registry).
    accept="application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json"
    accept+=",application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.docker.distribution.manifest.v2+json"
    digest="$(curl -fsSI -H "Accept: $accept" "http://127.0.0.1:$registry_port/v2/podmigrate/manifests/kind" \
        | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: *//p')"
    [[ "$digest" == sha256:* ]] || die "the registry does not report a digest for podmigrate:kind"
    image="$registry:5000/podmigrate@$digest"
fi
overlay="$(bash "$here/write-overlay.sh" "$state/overlay" "$image")"
log "installing podmigrate ($image): kubectl apply -k $overlay"
"$kubectl" --context "$context" apply -k "$overlay" >&2
"$kubectl" --context "$context" -n podmigrate-system rollout status deploy/podmigrate-controller --timeout=5m >&2
"$kubectl" --context "$context" -n podmigrate-system rollout status ds/podmigrate-agent --timeout=5m >&2
log "ready: kubectl --context $context get nodes; kubectl --context $context migrate pod NAME --to $cluster-worker2"
