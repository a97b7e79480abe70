#!/usr/bin/env bash
# Build the local cluster's control-plane binaries from source, once per release.
#
# Why from source: the local cluster must run the real upstream API server,
# controllers and scheduler of exactly the release pinned in go.mod (k8s.io/kubernetes
# and etcd's server module, imported by tools.go), with nothing downloaded but Go
# modules. The Go build cache makes a rebuild cheap; the finished binaries are cached
# per release under ${PODMIGRATE_CACHE:-$HOME/.cache/podmigrate}/k8s-<version>/bin/,
# so this script is a no-op (a few milliseconds) once they exist.
#
# Output contract: progress goes to stderr; the last line on stdout is the bin dir.
# localcluster/controlplane.py relies on that, so the version-to-path rule lives here only.
#
# Safety: builds into a temporary directory next to the target and renames it into
# place, so a killed build never leaves a half-filled bin/ that looks complete; a
# flock serializes concurrent callers (the second one finds the binaries and exits).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${PODMIGRATE_CACHE:-$HOME/.cache/podmigrate}"

# The pinned release, read from go.mod's require line, e.g. "v1.36.3".
k8s_version="$(sed -n 's/^[[:space:]]*k8s\.io\/kubernetes[[:space:]]\+\(v[0-9][^[:space:]]*\).*$/\1/p' "$here/go.mod" | head -n1)"
if [[ -z "$k8s_version" ]]; then
    echo "build.sh: cannot find the k8s.io/kubernetes version in $here/go.mod" >&2
    exit 1
fi

release_dir="$cache_root/k8s-$k8s_version"
bin_dir="$release_dir/bin"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

# shellcheck source=../buildcache.sh
source "$here/../buildcache.sh"
cached_or_lock "$bin_dir" "${binaries[@]}"

command -v go >/dev/null || { echo "build.sh: 'go' is not on PATH" >&2; exit 1; }

tmp_dir="$(mktemp -d "$release_dir/bin.tmp.XXXXXX")"
trap 'rm -rf "$tmp_dir"' EXIT

# Version stamps as upstream's hack/lib/version.sh sets them; without them the
# binaries report v0.0.0-master, which clients' version-skew checks dislike.
# Only the link step depends on ldflags, so the compile cache is still reused.
minor="${k8s_version#v*.}"
minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version"
    ldflags+=" -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
done

echo "build.sh: building etcd and Kubernetes $k8s_version into $bin_dir (first build takes many minutes)" >&2
start=$SECONDS
cd "$here"
# -mod=readonly: go.mod/go.sum are committed and must never be rewritten by a build.
# -trimpath: no local paths in the binaries, and the same cache keys as earlier builds.
CGO_ENABLED=0 go build -buildvcs=false -mod=readonly -trimpath -ldflags="$ldflags" \
    -o "$tmp_dir/" \
    go.etcd.io/etcd/server/v3 \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl
# etcd's main package is the module root, so go names the binary after its last path element.
mv "$tmp_dir/server" "$tmp_dir/etcd"

echo "build.sh: built in $((SECONDS - start)) s" >&2
install_built "$tmp_dir" "$bin_dir" "${binaries[@]}"
