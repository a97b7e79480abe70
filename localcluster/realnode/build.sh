#!/usr/bin/env bash
# build.sh - build and cache the binaries of a real node: upstream's kubelet, containerd, its
# runc shim, ctr, the CNI reference plugins (bridge, host-local, loopback, portmap) and the
# sandbox ("pause") process of go/pause (ours: no pause image can be pulled from outside here),
# and containerd's stream processor for encrypted layers, go/ctd-decoder (imgcrypt's decoder on
# imgcrypt's library: its own cmd module is not on the Go module proxy; go/ctd-decoder says why).
#
# Versions are pinned by two committed Go modules, built with -mod=readonly (go.mod/go.sum are
# never rewritten by a build):
#   kubelet/go.mod   k8s.io/kubernetes (must equal ../k8s-binaries/go.mod: kubelet and control
#                    plane are one release); its own module so the control plane's go.mod is
#                    not touched, with the same replace directives and upstream's own versions
#   go/go.mod        github.com/containerd/containerd/v2 and github.com/containernetworking/plugins
#                    (the plugins at the version containerd itself requires: containerd's
#                    dependencies are not upgraded by the combination); imgcrypt/v2 and ocicrypt
#                    for ctd-decoder, at the versions containerd requires
#
# Output: $PODMIGRATE_CACHE/realnode-<k8s>-containerd-<v>-cni-<v>-r<recipe>/bin, printed as the
# last stdout line. A second run finds the binaries and exits at once. Built into a temp dir
# and renamed into place; flock serializes concurrent callers.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${PODMIGRATE_CACHE:-$HOME/.cache/podmigrate}"
recipe=2   # bump when the build flags below change: a new cache directory is built (2: ctd-decoder)

modver() {  # modver GO.MOD MODULE -> the version required for MODULE
    sed -n "s|^[[:space:]]*\(require[[:space:]]\+\)\?${2//./\\.}[[:space:]]\+\(v[0-9][^[:space:]]*\).*$|\2|p" "$1" | head -n1
}
k8s_version="$(modver "$here/kubelet/go.mod" k8s.io/kubernetes)"
cp_version="$(modver "$here/../k8s-binaries/go.mod" k8s.io/kubernetes)"
containerd_version="$(modver "$here/go/go.mod" github.com/containerd/containerd/v2)"
cni_version="$(modver "$here/go/go.mod" github.com/containernetworking/plugins)"
for v in k8s_version containerd_version cni_version; do
    [[ -n "${!v}" ]] || { echo "build.sh: cannot read $v from the go.mod files in $here" >&2; exit 1; }
done
if [[ "$k8s_version" != "$cp_version" ]]; then
    echo "build.sh: kubelet/go.mod pins k8s.io/kubernetes $k8s_version but ../k8s-binaries/go.mod $cp_version: keep them equal" >&2
    exit 1
fi

release_dir="$cache_root/realnode-k8s-$k8s_version-containerd-$containerd_version-cni-$cni_version-r$recipe"
bin_dir="$release_dir/bin"
binaries=(kubelet containerd containerd-shim-runc-v2 ctr bridge host-local loopback portmap pause ctd-decoder)

# shellcheck source=../buildcache.sh
source "$here/../buildcache.sh"
cached_or_lock "$bin_dir" "${binaries[@]}"

export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build.sh: 'go' is not on PATH" >&2; exit 1; }

tmp_dir="$(mktemp -d "$release_dir/bin.tmp.XXXXXX")"
trap 'rm -rf "$tmp_dir"' EXIT
start=$SECONDS
echo "build.sh: building kubelet $k8s_version, containerd $containerd_version, CNI plugins $cni_version into $bin_dir" >&2

# kubelet: version stamps as upstream's hack/lib/version.sh sets them (as ../k8s-binaries/build.sh).
minor="${k8s_version#v*.}"
minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
(cd "$here/kubelet" && CGO_ENABLED=0 go build -buildvcs=false -mod=readonly -trimpath -ldflags="$ldflags" \
    -o "$tmp_dir/" k8s.io/kubernetes/cmd/kubelet)

# containerd: upstream's Makefile stamps version.Version (what the CRI Version call, and so the
# Node's containerRuntimeVersion, reports) and version.Package. No cgo: the tags drop the
# snapshotters that need it (btrfs, devmapper, zfs); overlayfs and native remain.
cd_ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd_version"
cd_ldflags+=" -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2"
(cd "$here/go" && CGO_ENABLED=0 go build -buildvcs=false -mod=readonly -trimpath -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags="$cd_ldflags" -o "$tmp_dir/" \
    github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    github.com/containerd/containerd/v2/cmd/ctr)
(cd "$here/go" && CGO_ENABLED=0 go build -buildvcs=false -mod=readonly -trimpath -ldflags="-s -w" -o "$tmp_dir/" \
    github.com/containernetworking/plugins/plugins/main/bridge \
    github.com/containernetworking/plugins/plugins/main/loopback \
    github.com/containernetworking/plugins/plugins/ipam/host-local \
    github.com/containernetworking/plugins/plugins/meta/portmap \
    github.com/podmigrate/localcluster/realnode/pause \
    github.com/podmigrate/localcluster/realnode/ctd-decoder)

echo "build.sh: built in $((SECONDS - start)) s" >&2
install_built "$tmp_dir" "$bin_dir" "${binaries[@]}"
