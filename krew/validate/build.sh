#!/usr/bin/env bash
# Build krew's own tools, from the release pinned in go.mod (Go module proxy only), and manifestcheck.
#
#   kubectl-krew             krew itself (sigs.k8s.io/krew/cmd/krew): `kubectl krew install`
#   validate-krew-manifest   krew's manifest validator (sigs.k8s.io/krew/cmd/validate-krew-manifest),
#                            the public form of krew's internal validation package
#   manifestcheck            main.go here: the manifest decoded strictly into krew's public types
#
# Cached in ${PODMIGRATE_CACHE:-$HOME/.cache/podmigrate}/krew-<version>/bin/ with a stamp naming a
# hash of go.mod, go.sum and main.go, so this is a no-op (milliseconds) until one of them changes;
# the first build takes about 20 s. Built into a temporary directory and renamed into place (a
# killed build leaves nothing that looks complete); a flock serializes concurrent callers.
#
# krew is built without its version stamp on purpose: an unstamped krew counts as a development
# build and never asks GitHub for a newer release (callers set KREW_NO_UPGRADE_CHECK=1 as well).
#
# Output contract: progress goes to stderr; the last line on stdout is the bin dir.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${PODMIGRATE_CACHE:-$HOME/.cache/podmigrate}"

krew_version="$(sed -n 's/^[[:space:]]*\(require[[:space:]]\+\)\{0,1\}sigs\.k8s\.io\/krew[[:space:]]\+\(v[0-9][^[:space:]]*\).*$/\2/p' "$here/go.mod" | head -n1)"
if [[ -z "$krew_version" ]]; then
    echo "build.sh: cannot find the sigs.k8s.io/krew version in $here/go.mod" >&2
    exit 1
fi

release_dir="$cache_root/krew-$krew_version"
bin_dir="$release_dir/bin"
sources="$(cat "$here/go.mod" "$here/go.sum" "$here"/*.go | sha256sum | cut -c1-16)"
stamp=".sources-$sources"
binaries=(kubectl-krew validate-krew-manifest manifestcheck)

complete() {
    local b
    [[ -f "$bin_dir/$stamp" ]] || return 1
    for b in "${binaries[@]}"; do
        [[ -x "$bin_dir/$b" ]] || return 1
    done
}

if complete; then
    echo "$bin_dir"
    exit 0
fi
mkdir -p "$release_dir"
exec 9>"$release_dir/.build.lock"
flock 9
if complete; then  # another caller built it while we waited
    echo "$bin_dir"
    exit 0
fi

command -v go >/dev/null || { echo "build.sh: 'go' is not on PATH" >&2; exit 1; }

tmp_dir="$(mktemp -d "$release_dir/bin.tmp.XXXXXX")"
trap 'rm -rf "$tmp_dir"' EXIT

echo "build.sh: building krew $krew_version and its manifest validator into $bin_dir" >&2
start=$SECONDS
cd "$here"
# -mod=readonly: go.mod/go.sum are committed and never rewritten by a build. -trimpath: no local paths.
CGO_ENABLED=0 go build -buildvcs=false -mod=readonly -trimpath -o "$tmp_dir/" \
    sigs.k8s.io/krew/cmd/krew sigs.k8s.io/krew/cmd/validate-krew-manifest
CGO_ENABLED=0 go build -buildvcs=false -mod=readonly -trimpath -o "$tmp_dir/manifestcheck" .
mv "$tmp_dir/krew" "$tmp_dir/kubectl-krew"  # the name kubectl looks for: `kubectl krew`
touch "$tmp_dir/$stamp"
echo "build.sh: built in $((SECONDS - start)) s" >&2

for b in "${binaries[@]}"; do
    [[ -x "$tmp_dir/$b" ]] || { echo "build.sh: $b was not built" >&2; exit 1; }
done
chmod 0755 "$tmp_dir"  # mktemp -d made it 0700
rm -rf "$bin_dir"       # an older build (other sources) or an interrupted layout
mv -T "$tmp_dir" "$bin_dir"
trap - EXIT
echo "$bin_dir"
