#!/usr/bin/env bash
# build.sh - build and cache kind's CLI or the cluster.yaml validator, from the kind version that
# kind-config/validate/go.mod pins (one pin for both: the validator runs the same kind code that
# `kind create cluster` runs). Built with -mod=readonly: go.mod/go.sum are never rewritten.
#
#   build.sh kind       -> $PODMIGRATE_CACHE/kind-<version>/bin              (kind)
#   build.sh validate   -> $PODMIGRATE_CACHE/kind-<version>/validate-<hash>  (validate, containerd-base.toml)
#
# The directory is printed as the last stdout line. <hash> covers the validator's sources, so an
# edit rebuilds it; a second run finds the build and exits at once. Needs Go and the Go module
# proxy (or a module cache that holds kind and its dependencies). Users with Docker do not need
# this: kind-up.sh uses any kind on PATH (`go install sigs.k8s.io/kind@<version>` or a release).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cache_root="${PODMIGRATE_CACHE:-$HOME/.cache/podmigrate}"
what="${1:-}"
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build.sh: 'go' is not on PATH" >&2; exit 1; }

mod="$here/validate"
kind_version="$(sed -n 's|^require sigs\.k8s\.io/kind \(v[^[:space:]]*\).*|\1|p; s|^[[:space:]]*sigs\.k8s\.io/kind \(v[^[:space:]]*\).*|\1|p' "$mod/go.mod" | head -n1)"
[[ -n "$kind_version" ]] || { echo "build.sh: cannot read the sigs.k8s.io/kind version from $mod/go.mod" >&2; exit 1; }

# shellcheck source-path=SCRIPTDIR/.. source=localcluster/buildcache.sh
source "$repo/localcluster/buildcache.sh"

case "$what" in
kind)
    out="$cache_root/kind-$kind_version/bin"
    cached_or_lock "$out" kind
    tmp="$(mktemp -d "$(dirname "$out")/bin.tmp.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    echo "build.sh: building kind $kind_version into $out" >&2
    # As kind's own Makefile builds its release binaries: static, trimmed, stripped.
    (cd "$mod" && CGO_ENABLED=0 go build -buildvcs=false -mod=readonly -trimpath -ldflags="-s -w" -o "$tmp/kind" sigs.k8s.io/kind)
    install_built "$tmp" "$out" kind
    ;;
validate)
    hash="$(cat "$mod/go.mod" "$mod/go.sum" "$mod/main.go" "$here/build.sh" | sha256sum | cut -c1-12)"
    out="$cache_root/kind-$kind_version/validate-$hash"
    cached_or_lock "$out" validate
    tmp="$(mktemp -d "$(dirname "$out")/validate.tmp.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    echo "build.sh: building the cluster.yaml validator (kind $kind_version) into $out" >&2
    (cd "$mod" && CGO_ENABLED=0 go build -buildvcs=false -mod=readonly -trimpath -o "$tmp/validate" .)
    # kind's base containerd config of this kind version: what its patches are applied to on a node
    # whose image this kind built (kindest/node's /etc/containerd/config.toml).
    kind_dir="$(cd "$mod" && go list -mod=readonly -m -f '{{.Dir}}' sigs.k8s.io/kind)"
    install -m 0644 "$kind_dir/images/base/files/etc/containerd/config.toml" "$tmp/containerd-base.toml"
    install_built "$tmp" "$out" validate
    ;;
*)
    echo "usage: build.sh kind|validate" >&2
    exit 2
    ;;
esac
