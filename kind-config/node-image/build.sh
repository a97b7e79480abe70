#!/usr/bin/env bash
# build.sh - build podmigrate's kind node image (Dockerfile beside this file) with docker or podman.
#
#   build.sh [--engine docker|podman] [--base IMAGE] [--tag IMAGE] [--context-only DIR]
#
#   --base          the kindest/node image to start from (default docker.io/kindest/node:<k8s version>,
#                   the version localcluster/k8s-binaries/go.mod pins: the project's control plane)
#   --tag           the image to produce (default podmigrate/kind-node:<k8s version>)
#   --context-only  stage the build context into DIR and stop (no engine needed)
#
# The context is staged rather than being the repository, so that it holds exactly the files the
# image is made of: the Dockerfile and its files, podmigrate's CRIU hook (node-agent/node_agent/
# criu_hook.sh, the file the tests exercise) and the Go module pinning containerd for the real
# nodes (localcluster/realnode/go). Prints the image name as the last stdout line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

k8s_version() {  # the k8s.io/kubernetes version the project's control plane is built from
    sed -n 's|^[[:space:]]*\(require[[:space:]]\+\)\?k8s\.io/kubernetes[[:space:]]\+\(v[0-9][^[:space:]]*\).*$|\2|p' \
        "$repo/localcluster/k8s-binaries/go.mod" | head -n1
}

engine="${KIND_ENGINE:-}"
base=""
tag=""
context_only=""
while [[ $# -gt 0 ]]; do
    case "$1" in
    --engine) engine="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --context-only) context_only="$2"; shift 2 ;;
    -h | --help) sed -n '2,14p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
    esac
done
version="$(k8s_version)"
[[ -n "$version" ]] || { echo "build.sh: cannot read k8s.io/kubernetes from localcluster/k8s-binaries/go.mod" >&2; exit 1; }
base="${base:-docker.io/kindest/node:$version}"
tag="${tag:-podmigrate/kind-node:$version}"

stage() {  # stage DIR: the build context
    local dir=$1
    mkdir -p "$dir"
    cp "$here/Dockerfile" "$here/runc.conf" "$here/hosts.toml" "$here/criu-runtime-packages.sh" "$dir/"
    cp "$repo/node-agent/node_agent/criu_hook.sh" "$dir/criu_hook.sh"
    mkdir -p "$dir/realnode-go"
    cp -R "$repo/localcluster/realnode/go/." "$dir/realnode-go/"
}

if [[ -n "$context_only" ]]; then
    stage "$context_only"
    echo "$context_only"
    exit 0
fi

if [[ -z "$engine" ]]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker
    elif command -v podman >/dev/null; then engine=podman
    else echo "build.sh: neither docker (with a running daemon) nor podman found" >&2; exit 1
    fi
fi
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
stage "$ctx"
echo "build.sh: building $tag from $base with $engine" >&2
"$engine" build --build-arg "KIND_NODE_IMAGE=$base" -t "$tag" "$ctx" >&2
echo "$tag"
