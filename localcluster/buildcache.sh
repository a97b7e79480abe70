# Sourced by the local cluster's build scripts (k8s-binaries/build.sh, realnode/build.sh): the
# "built once per version" protocol, written once.
#
# cached_or_lock BIN_DIR BINARY...
#   Every BINARY executable in BIN_DIR: print BIN_DIR and exit 0 (the caller's whole run is a
#   no-op). Otherwise take the release directory's build lock (held until the caller exits, so
#   concurrent callers build once) and look again: another caller may have finished meanwhile.
#   Returns only when the caller must build.
#
# install_built TMP_DIR BIN_DIR BINARY...
#   The build went into TMP_DIR (made next to BIN_DIR, removed on exit if the build dies): check
#   every BINARY is there, rename TMP_DIR into place as BIN_DIR (so a killed build never leaves a
#   half-filled BIN_DIR that looks complete) and print BIN_DIR, the callers' output contract.

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

install_built() {
    local tmp_dir=$1 bin_dir=$2 b
    shift 2
    for b in "$@"; do
        [[ -x "$tmp_dir/$b" ]] || { echo "build.sh: $b was not built" >&2; exit 1; }
    done
    chmod 0755 "$tmp_dir"  # mktemp -d made it 0700
    rm -rf "$bin_dir"  # an incomplete bin/ of an older, interrupted layout
    mv -T "$tmp_dir" "$bin_dir"
    trap - EXIT
    echo "$bin_dir"
}
