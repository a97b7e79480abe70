#!/usr/bin/env bash
# write-overlay.sh DIR IMAGE - write DIR/kustomization.yaml: kind-config/overlay with podmigrate's
# image replaced by IMAGE (name@sha256:<digest>, as the nodes pull it). `kubectl apply -k DIR`
# installs podmigrate on the kind cluster; kind-up.sh does exactly that.
set -euo pipefail

dir="${1:?usage: write-overlay.sh DIR IMAGE}"
image="${2:?usage: write-overlay.sh DIR IMAGE}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# By digest only: a tag could name another image by the time a node pulls it.
if [[ ! "$image" =~ ^([^@[:space:]]+)@(sha256:[0-9a-f]{64})$ ]]; then
    echo "write-overlay.sh: IMAGE must be name@sha256:<64 hex digits>, got '$image'" >&2
    exit 2
fi
name="${BASH_REMATCH[1]}"
digest="${BASH_REMATCH[2]}"

relpath() {  # relpath FROM TO: TO relative to FROM (both existing directories; no GNU realpath on macOS)
    local from to up=""
    from="$(cd "$1" && pwd -P)"
    to="$(cd "$2" && pwd -P)"
    # Up from FROM until it is TO or one of TO's ancestors ("/" is everyone's).
    while [[ "$from" != / && "$to" != "$from" && "$to" != "$from"/* ]]; do
        from="$(dirname "$from")"
        up="../$up"
    done
    local rest="${to#"$from"}"
    rest="${rest#/}"
    local out="$up$rest"
    out="${out%/}"
    echo "${out:-.}"
}

mkdir -p "$dir"
# kustomize refuses an absolute path as a resource ("new root cannot be absolute"), and the state
# directory may be anywhere (KIND_STATE): the base is named relative to it.
base="$(relpath "$dir" "$here/overlay")"
cat >"$dir/kustomization.yaml" <<YAML
# Written by kind-config/write-overlay.sh (kind-up.sh): kind-config/overlay, with the image it pushed.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- $base
images:
- name: ghcr.io/podmigrate/podmigrate
  newName: $name
  digest: $digest
YAML
echo "$dir"
