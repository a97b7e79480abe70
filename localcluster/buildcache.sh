# Sourced by the local cluster's build scripts (k8s-binaries/build.sh, realnode/build.sh): the
# "built once per version" protocol, written once.
#
# cached_or_lock BIN_DIR BINARY...
#   Every BINARY executable in BIN_DIR: print BIN_DIR and exit 0 (the caller's whole run is a
#   no-op). Otherwise take the release directory's build lock (held until the caller exits, so
#   concurrent callers build once) and look again: another caller may have finished meanwhile.
#   Returns only when the caller must build.

_all_present() {
    local bin_dir=$1 b
    shift
    for b in "$@"; do
        [[ -x "$bin_dir/$b" ]] || return 1
    done
}

cached_or_lock() {
    local bin_dir=$1
    shift
    if _all_present "$bin_dir" "$@"; then
        echo "$bin_dir"
        exit 0
    fi
    mkdir -p "$(dirname "$bin_dir")"
    exec 9>"$(dirname "$bin_dir")/.build.lock"
    flock 9
    if _all_present "$bin_dir" "$@"; then
        echo "$bin_dir"
        exit 0
    fi
}
