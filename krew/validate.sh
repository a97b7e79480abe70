#!/usr/bin/env bash
# Check a krew plugin manifest with krew's own code and, given the archive, install it as krew does.
#
#   krew/validate.sh MANIFEST [ARCHIVE]
#
# 1. manifestcheck: the manifest decoded strictly into krew's public types (no unknown fields);
# 2. validate-krew-manifest -skip-install: krew's validation (krew-index runs the same command);
#    -skip-install because its install step downloads the manifest's uri, not a local file;
# 3. with ARCHIVE: `kubectl krew install --manifest=MANIFEST --archive=ARCHIVE` into a temporary
#    KREW_ROOT (krew checks the archive's sha256 against the manifest, unpacks it, links the bin),
#    then the installed kubectl-migrate --help, with its own temporary cache.
# The tools come from krew/validate/build.sh (built once per krew version). Nothing leaves the machine.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 MANIFEST [ARCHIVE]" >&2
    exit 2
fi
manifest="$1"
archive="${2:-}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

bin_dir="$(bash "$here/validate/build.sh" | tail -n1)"

echo "== manifestcheck $manifest" >&2
"$bin_dir/manifestcheck" "$manifest"

echo "== validate-krew-manifest -manifest $manifest -skip-install" >&2
"$bin_dir/validate-krew-manifest" -manifest "$manifest" -skip-install

if [[ -z "$archive" ]]; then
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export KREW_ROOT="$work/krew" KREW_NO_UPGRADE_CHECK=1
echo "== KREW_ROOT=$KREW_ROOT kubectl krew install --manifest=$manifest --archive=$archive" >&2
PATH="$KREW_ROOT/bin:$PATH" "$bin_dir/kubectl-krew" install --manifest="$manifest" --archive="$archive" </dev/null

echo "== $KREW_ROOT/bin/kubectl-migrate --help" >&2
XDG_CACHE_HOME="$work/cache" "$KREW_ROOT/bin/kubectl-migrate" --help >"$work/help.txt"
head -n 1 "$work/help.txt"
echo "validate.sh: $manifest is valid for krew and installs from $archive" >&2
