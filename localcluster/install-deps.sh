#!/usr/bin/env bash
# install-deps.sh - install and verify every system dependency of the local cluster.
#
# Runs as root on a fresh Debian 12 (bookworm) or Debian 13 (trixie) machine. Only the
# Debian mirrors configured in /etc/apt/sources.list* are used. Idempotent: a second
# run installs nothing, downloads nothing and builds nothing (a few seconds).
#
#   1. apt packages of the host's own release: runc iproute2 iptables busybox-static
#      python3 xz-utils tar ca-certificates openssl util-linux (apt-get update only when
#      needed; iptables because CRIU locks a container's netns with iptables-restore).
#   2. CRIU 4.2.1, built on Debian 12 and 13 alike from Debian sid's orig tarball, fetched
#      with a PRIVATE apt configuration under $CACHE/apt-trixie (own sources.list, lists and
#      cache; the host's dpkg database and sources are never touched, nothing from trixie or
#      sid is installed), against the host's own -dev packages, into $CACHE/criu-4.2.1/.
#      Why not a distribution criu: bookworm's 3.17 fails `criu check` on current kernels,
#      and trixie's 4.1.1 cannot dump a process with a TCP socket on kernels >= 6.16.
#      `criu check` must say "Looks good".
#   3. docker-registry (distribution 2.8) from Debian 13: `apt-get download` (host apt on
#      Debian 13, the private trixie config on Debian 12) + `dpkg-deb -x` into
#      $CACHE/docker-registry-<version>/ (its postinst would start a system service).
#      Why Debian 13's (2.8.3, built with Go 1.24) and not bookworm's (2.8.2, Go 1.19): Go
#      hashes sha256 with the CPU's SHA instructions since 1.21, and a blob is one stream that
#      the registry hashes on one core, so bookworm's build took ~3x the CPU per byte and
#      capped every upload at ~370 MB/s here (docs/facts.md, "Registry throughput").
#   4. checkpointctl 1.3.x from Debian 13: `apt-get download` (host apt on Debian 13, the
#      private trixie config on Debian 12) + `dpkg-deb -x` into $CACHE/checkpointctl-<version>/,
#      plus a wrapper script there (Debian's binary has no --version flag, and on Debian 12
#      it needs trixie's glibc, which is extracted next to it, never installed).
#
# Results: symlinks in $CACHE/bin/ (criu, docker-registry, checkpointctl, and runc if it
# is not in /usr/sbin or /usr/bin); their paths are printed at the end as NAME=PATH.
# Progress goes to stderr; a failure prints one "install-deps: ERROR: ..." line, exit 1.
#
# Environment:
#   PODMIGRATE_CACHE   cache directory (default: $HOME/.cache/podmigrate)
#   PODMIGRATE_REFRESH=1  ignore cached docker-registry/checkpointctl/criu and fetch again
#
# Writes outside the cache: apt/dpkg state of the host (step 1 and criu build deps) and
# the symlink /usr/local/sbin/criu -> $CACHE/criu-4.2.1/sbin/criu
# (runc runs `criu` from PATH, and /usr/local/sbin comes before /usr/sbin).
set -euo pipefail
set -o errtrace

CACHE="${PODMIGRATE_CACHE:-$HOME/.cache/podmigrate}"
REFRESH="${PODMIGRATE_REFRESH:-0}"
# 4.2.1, not trixie's 4.1.1: on kernels >= 6.16 getsockopt(SO_PASSCRED/SO_PASSSEC) on an inet
# socket fails with EOPNOTSUPP and criu 4.1.1 aborts the dump of any process with a TCP socket
# ("sockets: Can't get 1:16 opt: Operation not supported"); 4.2 only asks AF_UNIX/netlink sockets.
CRIU_VERSION=4.2.1
CRIU_DIR="$CACHE/criu-$CRIU_VERSION"
REGISTRY_MIN_VERSION=2.8.3        # Debian 13's docker-registry (step 3)
BIN="$CACHE/bin"
PRIV="$CACHE/apt-trixie"          # private apt configuration (Debian 12 only)
DEBIAN_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# iptables: CRIU (4.1.1, Debian 12 build and Debian 13 package alike) locks the network
# namespace of any container that has its own netns (also a pod netns joined by path) with
# `iptables-restore`; without it `runc checkpoint` fails: 'execvp("iptables-restore", ...)
# failed' / 'net: Locking network failed'. The nftables lock method cannot be chosen for
# runc: its /etc/criu/runc.conf route crashes criu 4.1.1 (`network-lock` in an RPC config
# file: NULL argv dereference, fixed upstream by checkpoint-restore/criu PR #3051).
# shellcheck: tests/kind_config lints the kind scripts. python3-pip: `make image` installs the image's Python packages with Debian's own pip, for Debian's python3 (imagebuild/).
HOST_PKGS=(runc iproute2 iptables busybox-static python3 python3-pip shellcheck xz-utils tar ca-certificates openssl util-linux)
# libprotobuf-dev: criu's images/google/protobuf/descriptor.proto is a symlink to
# /usr/include/google/protobuf/descriptor.proto (only a Recommends of protobuf-compiler).
CRIU_BUILD_PKGS=(gcc make libbsd-dev libcap-dev libgnutls28-dev libnet1-dev libnftables-dev
                 libnl-3-dev libprotobuf-c-dev libprotobuf-dev protobuf-c-compiler
                 protobuf-compiler python3-protobuf uuid-dev pkgconf)

die() { echo "install-deps: ERROR: $*" >&2; exit 1; }
log() { echo "install-deps: $*" >&2; }
trap 'die "unexpected failure at line $LINENO: $BASH_COMMAND"' ERR

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C
# Downloads land in root-only directories: let apt fetch as root instead of warning
# that the _apt sandbox user cannot write there.
APT_COMMON=(-q -o APT::Sandbox::User=root)

# ---------------------------------------------------------------- preconditions
[[ $EUID -eq 0 ]] || die "must run as root"
[[ -r /etc/os-release ]] || die "/etc/os-release missing: not a Debian machine"
# shellcheck disable=SC1091
OS_ID=$(. /etc/os-release; echo "${ID:-}")
OS_VER=$(. /etc/os-release; echo "${VERSION_ID:-}")
OS_CODENAME=$(. /etc/os-release; echo "${VERSION_CODENAME:-}")
[[ $OS_ID == debian ]] || die "unsupported distribution '$OS_ID' (need Debian 12 or 13)"
case "$OS_VER" in
  12|13) ;;
  *) die "unsupported Debian release '${OS_VER:-unknown}' (need 12 or 13)";;
esac
ARCH=$(dpkg --print-architecture)
mkdir -p "$CACHE" "$BIN"

# ---------------------------------------------------------------- host apt helpers
APT_UPDATED=0
apt_update_host() {
  [[ $APT_UPDATED == 1 ]] && return 0
  log "apt-get update (host sources)"
  local out
  out=$(apt-get "${APT_COMMON[@]}" update 2>&1) || die "apt-get update failed (host sources): $(grep -E '^E:' <<<"$out" | head -n1)"
  printf '%s\n' "$out" >&2
  # A failed index is only a warning for apt-get update; installs then fail with a clear error.
  if grep -Eq '^W: (Failed to fetch|Some index files failed)' <<<"$out"; then
    log "warning: apt-get update could not fetch every index: $(grep -E '^W: Failed' <<<"$out" | head -n1)"
  fi
  APT_UPDATED=1
}

# Print the packages (NAME or NAME=VERSION) that are not installed.
missing_pkgs() {
  local p st
  for p in "$@"; do
    st=$(dpkg-query -W -f='${db:Status-Abbrev}' "${p%%=*}" 2>/dev/null || true)
    [[ $st == ii* ]] || echo "$p"
  done
}

# One install attempt: simulate first and refuse anything that would change the host's
# libc; then install. Returns non-zero (with the reason in $APT_ERR) on failure.
APT_ERR=
apt_install_try() {
  local sim
  if ! sim=$(apt-get "${APT_COMMON[@]}" install -s --no-install-recommends "$@" 2>&1); then
    APT_ERR=$(grep -E '^E:' <<<"$sim" | head -n1 || true); APT_ERR=${APT_ERR:-$(tail -n1 <<<"$sim")}
    return 1
  fi
  if grep -Eq '^(Inst|Remv) (libc6|libc-bin)(:[a-z0-9]+)? ' <<<"$sim"; then
    die "installing '$*' would change the host's libc6 ($(grep -E '^(Inst|Remv) (libc6|libc-bin)' <<<"$sim" | head -n1)); refusing"
  fi
  if ! apt-get "${APT_COMMON[@]}" install -y --no-install-recommends "$@" >&2; then
    APT_ERR="apt-get install failed"
    return 1
  fi
}

# Install the missing ones of the given packages; apt-get update only if needed.
apt_install() {
  local missing
  mapfile -t missing < <(missing_pkgs "$@")
  ((${#missing[@]})) || return 0
  log "installing with apt: ${missing[*]}"
  if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then apt_update_host; fi
  if ! apt_install_try "${missing[@]}"; then
    [[ $APT_UPDATED == 1 ]] && die "cannot install ${missing[*]}: $APT_ERR"
    apt_update_host                     # stale or missing lists: refresh once, retry
    apt_install_try "${missing[@]}" || die "cannot install ${missing[*]}: $APT_ERR"
  fi
  mapfile -t missing < <(missing_pkgs "$@")
  ((${#missing[@]} == 0)) || die "packages still not installed after apt-get install: ${missing[*]}"
}

# apt-get download PKG into DIR with the host's apt configuration (update once if needed).
apt_download_host() {
  local pkg=$1 dir=$2
  mkdir -p "$dir"
  if ! (cd "$dir" && apt-get "${APT_COMMON[@]}" download "$pkg" >&2); then
    [[ $APT_UPDATED == 1 ]] && die "apt-get download $pkg failed"
    apt_update_host
    (cd "$dir" && apt-get "${APT_COMMON[@]}" download "$pkg" >&2) || die "apt-get download $pkg failed"
  fi
}

# ---------------------------------------------------------------- private trixie apt
# The URI of the host's main Debian archive (the entry whose suite is the host's
# codename), from deb822 *.sources files and one-line sources.list files.
host_mirror() {
  local f
  {
    for f in /etc/apt/sources.list.d/*.sources; do
      [[ -r $f ]] || continue
      awk -v cn="$OS_CODENAME" '
        function flush() {
          if (types ~ /(^| )deb( |$)/ && enabled != "no" && (" " suites " ") ~ (" " cn " ") && uri != "") print uri
          types = suites = uri = enabled = ""
        }
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { flush(); next }
        tolower($1) == "types:"   { types = ""; for (i = 2; i <= NF; i++) types = types " " $i; sub(/^ /, "", types) }
        tolower($1) == "uris:"    { uri = $2 }
        tolower($1) == "suites:"  { suites = ""; for (i = 2; i <= NF; i++) suites = suites " " $i; sub(/^ /, "", suites) }
        tolower($1) == "enabled:" { enabled = tolower($2) }
        END { flush() }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [[ -r $f ]] || continue
      awk -v cn="$OS_CODENAME" '
        $1 == "deb" {
          i = 2
          if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
          if ($(i + 1) == cn) print $i
        }' "$f"
    done
  } | head -n1
}

PRIV_OPTS=()
priv_opts() {
  PRIV_OPTS=(-o Dir::Etc::sourcelist="$PRIV/sources.list" -o Dir::Etc::sourceparts="$PRIV/empty.d" \
    -o Dir::State::Lists="$PRIV/lists" -o Dir::Cache="$PRIV/cache" \
    -o Dir::Etc::preferences=/dev/null -o Dir::Etc::preferencesparts="$PRIV/empty.d" \
    -o Acquire::Languages=none \
    -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
    -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false \
    -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false \
    -o Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false)
}
priv_apt() { priv_opts; apt-get "${APT_COMMON[@]}" "${PRIV_OPTS[@]}" "$@"; }
priv_apt_cache() { priv_opts; apt-cache -q "${PRIV_OPTS[@]}" "$@"; }

PRIV_UPDATED=0
priv_apt_update() {
  [[ $PRIV_UPDATED == 1 ]] && return 0
  log "apt-get update (private trixie config in $PRIV)"
  local out
  # apt-get update exits 0 when an index cannot be fetched ("W: Failed to fetch"):
  # treat any failed index as fatal.
  out=$(priv_apt update 2>&1) || true
  printf '%s\n' "$out" >&2
  if grep -Eq '^(E:|W: Failed to fetch|W: Some index files failed)' <<<"$out" \
     || ! compgen -G "$PRIV/lists/*_Packages*" >/dev/null || ! compgen -G "$PRIV/lists/*_Sources*" >/dev/null; then
    die "apt-get update of the private trixie sources ($(grep -v '^#' "$PRIV/sources.list" | head -n1)) failed: $(grep -E '^(E:|W: Failed)' <<<"$out" | head -n1)"
  fi
  PRIV_UPDATED=1
}

# Set up the private trixie apt configuration (deb + deb-src lines on the host's mirror).
priv_apt_setup() {
  local mirror
  [[ -r $DEBIAN_KEYRING ]] || die "$DEBIAN_KEYRING missing (package debian-archive-keyring)"
  mirror=$(host_mirror)
  [[ -n $mirror ]] || die "cannot find the host's Debian mirror for '$OS_CODENAME' in /etc/apt/sources.list*"
  mkdir -p "$PRIV/lists/partial" "$PRIV/cache/archives/partial" "$PRIV/empty.d"
  local want
  want="deb [signed-by=$DEBIAN_KEYRING] $mirror trixie main
deb-src [signed-by=$DEBIAN_KEYRING] $mirror trixie main
deb-src [signed-by=$DEBIAN_KEYRING] $mirror sid main"
  if [[ ! -f $PRIV/sources.list || $(cat "$PRIV/sources.list") != "$want" ]]; then
    printf '%s\n' "$want" > "$PRIV/sources.list"
    rm -f "$PRIV/lists/"*_InRelease "$PRIV/lists/"*_Packages* "$PRIV/lists/"*_Sources*
  fi
  if ! compgen -G "$PRIV/lists/*_Packages*" >/dev/null || ! compgen -G "$PRIV/lists/*_Sources*" >/dev/null; then
    priv_apt_update
  fi
}

# Run a private-apt download command in DIR; on failure refresh the lists once and retry.
priv_apt_fetch() {
  local dir=$1; shift
  mkdir -p "$dir"
  if ! (cd "$dir" && priv_apt "$@" >&2); then
    [[ $PRIV_UPDATED == 1 ]] && return 1
    priv_apt_update
    (cd "$dir" && priv_apt "$@" >&2) || return 1
  fi
}

# ---------------------------------------------------------------- small helpers
# Newest cached, completed DIR matching $CACHE/NAME-*/ (empty if none).
cached_dir() {
  local name=$1 d best=
  [[ $REFRESH == 1 ]] && return 0
  for d in "$CACHE/$name"-*/; do
    [[ -f $d.complete ]] || continue
    best=$(printf '%s\n%s\n' "$best" "${d%/}" | sed '/^$/d' | sort -V | tail -n1)
  done
  echo "$best"
}

# Extract a .deb into $CACHE/NAME-<version>/; the directory is left in $EXTRACTED.
EXTRACTED=
extract_deb() {
  local name=$1 deb=$2 ver
  ver=$(dpkg-deb -f "$deb" Version 2>/dev/null) || die "not a .deb: $deb"
  EXTRACTED="$CACHE/$name-${ver//:/_}"
  rm -rf "$EXTRACTED"; mkdir -p "$EXTRACTED"
  dpkg-deb -x "$deb" "$EXTRACTED" || die "dpkg-deb -x $deb failed"
  cp "$deb" "$EXTRACTED/"
}

link() { ln -sfn "$2" "$BIN/$1"; }

STEP_T0=$SECONDS
step() { log "== $* (t=$((SECONDS - STEP_T0))s)"; }

# ================================================================ 1. host apt packages
step "1/4 apt packages ($OS_CODENAME): ${HOST_PKGS[*]}"
apt_install "${HOST_PKGS[@]}"
RUNC=$(command -v runc || true)
[[ -n $RUNC ]] || die "runc not found after installing package runc"
runc --version >/dev/null 2>&1 || die "runc --version fails"
/bin/busybox true 2>/dev/null || die "/bin/busybox (busybox-static) does not run"
/usr/bin/python3 --version >/dev/null 2>&1 || die "/usr/bin/python3 does not run"
ip -V >/dev/null 2>&1 || die "ip (iproute2) does not run"
nsenter --version >/dev/null 2>&1 || die "nsenter (util-linux) does not run"
unshare --version >/dev/null 2>&1 || die "unshare (util-linux) does not run"
openssl version >/dev/null 2>&1 || die "openssl does not run"
xz --version >/dev/null 2>&1 || die "xz (xz-utils) does not run"
iptables-restore --version >/dev/null 2>&1 || die "iptables-restore (iptables) does not run (CRIU needs it to lock a container netns)"
tar --version >/dev/null 2>&1 || die "tar does not run"
[[ -s /etc/ssl/certs/ca-certificates.crt ]] || die "/etc/ssl/certs/ca-certificates.crt missing (ca-certificates)"

# ================================================================ 2. CRIU >= 4
step "2/4 criu >= 4"
# Fetch trixie's criu_$CRIU_VERSION.orig.tar.* into DIR with the private apt config.
# --tar-only: the mirror may not serve the .dsc/.debian.tar (404 here); apt still checks
# the tarball against the checksums of trixie's signed Sources index.
FETCH_ERR=
fetch_criu_orig() {
  local dir=$1 ver
  ver=$(priv_apt_cache showsrc criu 2>/dev/null | sed -n 's/^Version: //p' \
        | grep -E "^$CRIU_VERSION(-|$)" | sort -V | tail -n1 || true)
  if [[ -z $ver ]]; then
    FETCH_ERR="Debian sid (on $(host_mirror)) has no source package criu $CRIU_VERSION"; return 1
  fi
  log "fetching criu_$CRIU_VERSION.orig tarball of trixie source package criu $ver"
  mkdir -p "$dir"
  if ! (cd "$dir" && priv_apt source --download-only --tar-only "criu=$ver" >&2); then
    FETCH_ERR="apt-get source --download-only --tar-only criu=$ver failed (private trixie config)"; return 1
  fi
}

build_criu() {
  local src="$CACHE/src" tarball build="$CACHE/build/criu-$CRIU_VERSION" ver libcver
  # gcc is usually installed without libc6-dev (it is only a Recommends): add it,
  # pinned to the installed libc6 version so the host's libc is never upgraded.
  libcver=$(dpkg-query -W -f='${Version}' "libc6:$ARCH" 2>/dev/null || dpkg-query -W -f='${Version}' libc6)
  apt_install "${CRIU_BUILD_PKGS[@]}" "libc6-dev=$libcver"

  tarball=$(compgen -G "$src/criu_$CRIU_VERSION.orig.tar.*" | head -n1 || true)
  if [[ -z $tarball ]]; then
    priv_apt_setup
    # Download into a scratch dir and move into place only when apt has verified it.
    rm -rf "$src/.dl"
    if ! fetch_criu_orig "$src/.dl"; then
      [[ $PRIV_UPDATED == 1 ]] && die "$FETCH_ERR"
      priv_apt_update                   # stale private lists: refresh once, retry
      fetch_criu_orig "$src/.dl" || die "$FETCH_ERR"
    fi
    tarball=$(compgen -G "$src/.dl/criu_$CRIU_VERSION.orig.tar.*" | head -n1 || true)
    [[ -n $tarball ]] || die "criu_$CRIU_VERSION.orig.tar.* not found after apt-get source"
    mv "$tarball" "$src/"; rm -rf "$src/.dl"
    tarball="$src/${tarball##*/}"
  fi

  log "building criu $CRIU_VERSION from $tarball (make -j2, criu only)"
  rm -rf "$build"; mkdir -p "$build"
  tar -xf "$tarball" -C "$build" --strip-components=1 || die "cannot unpack $tarball"
  local t0=$SECONDS
  if ! make -C "$build" -j2 criu >"$build.log" 2>&1; then
    tail -n 20 "$build.log" >&2
    die "criu $CRIU_VERSION build failed (log: $build.log)"
  fi
  rm -rf "$CRIU_DIR"
  install -D -m 0755 "$build/criu/criu" "$CRIU_DIR/sbin/criu"
  touch "$CRIU_DIR/.complete"           # built; `criu check` below still runs every time
  log "criu built in $((SECONDS - t0))s"
  rm -rf "$build"
}

# Built from source on Debian 12 and 13 alike: neither release ships a criu that dumps TCP
# sockets on this kernel (see CRIU_VERSION).
CRIU_BIN="$CRIU_DIR/sbin/criu"
if [[ $REFRESH == 1 || ! -f $CRIU_DIR/.complete || ! -x $CRIU_BIN ]]; then
  build_criu
fi
criu_ver=$("$CRIU_BIN" --version 2>&1 | sed -n 's/^Version: *//p' | head -n1 || true)
[[ ${criu_ver%%.*} =~ ^[0-9]+$ && ${criu_ver%%.*} -ge 4 ]] \
  || die "$CRIU_BIN has version '${criu_ver:-unknown}', need >= 4"
check_out=$("$CRIU_BIN" check 2>&1 || true)
grep -q "Looks good" <<<"$check_out" \
  || die "'$CRIU_BIN check' does not say 'Looks good': $(tail -n1 <<<"$check_out")"
link criu "$CRIU_BIN"
# The one write outside the cache: runc execs `criu` from PATH, and a distribution criu
# (if installed in /usr/sbin) must not be the one it finds.
mkdir -p /usr/local/sbin
ln -sfn "$CRIU_BIN" /usr/local/sbin/criu
[[ $(readlink -f /usr/local/sbin/criu) == "$(readlink -f "$CRIU_BIN")" ]] \
  || die "/usr/local/sbin/criu does not point to $CRIU_BIN"

# ================================================================ 3. docker-registry
step "3/4 docker-registry (Debian 13)"
REG_DIR=$(cached_dir docker-registry)
# A cached bookworm build (2.8.2) is not reused: see the header.
if [[ -n $REG_DIR ]] && ! dpkg --compare-versions "${REG_DIR##*/docker-registry-}" ge "$REGISTRY_MIN_VERSION"; then
  REG_DIR=
fi
if [[ -z $REG_DIR ]]; then
  dl="$CACHE/dl/docker-registry"; rm -rf "$dl"
  if [[ $OS_VER == 13 ]]; then
    apt_download_host docker-registry "$dl"
  else
    priv_apt_setup
    priv_apt_fetch "$dl" download docker-registry \
      || die "apt-get download docker-registry failed (private trixie config)"
  fi
  deb=$(compgen -G "$dl/docker-registry_*.deb" | head -n1 || true)
  [[ -n $deb ]] || die "apt-get download docker-registry produced no .deb"
  reg_debver=$(dpkg-deb -f "$deb" Version)
  dpkg --compare-versions "$reg_debver" ge "$REGISTRY_MIN_VERSION" \
    || die "docker-registry $reg_debver is older than $REGISTRY_MIN_VERSION (Debian 13's)"
  extract_deb docker-registry "$deb"; REG_DIR=$EXTRACTED; touch "$REG_DIR/.complete"
  rm -rf "$dl"
fi
REG_BIN="$REG_DIR/usr/bin/docker-registry"
reg_ver=$("$REG_BIN" --version 2>&1) || die "$REG_BIN --version fails: $(head -n1 <<<"$reg_ver")"
link docker-registry "$REG_BIN"

# ================================================================ 4. checkpointctl
# Two quirks of Debian 13's checkpointctl, handled by a small generated wrapper
# $CACHE/checkpointctl-<ver>/checkpointctl (what $CACHE/bin/checkpointctl points to):
#  - Debian builds it without upstream's `-X main.name=... -X main.version=...` ldflags,
#    so the binary itself has no --version flag ("Error: unknown flag: --version"); the
#    wrapper answers --version from the package version.
#  - it is a cgo binary needing libc6 (>= 2.38); bookworm has 2.36 ("version `GLIBC_2.38'
#    not found"). On Debian 12 trixie's libc6 .deb is extracted next to it (never
#    installed: the host's libc and dpkg database stay untouched) and the wrapper runs
#    checkpointctl through that glibc's own dynamic loader.
step "4/4 checkpointctl (Debian 13)"
CPC_DIR=$(cached_dir checkpointctl)
if [[ -z $CPC_DIR || ! -x $CPC_DIR/checkpointctl ]]; then
  dl="$CACHE/dl/checkpointctl"; rm -rf "$dl"
  if [[ $OS_VER == 13 ]]; then
    apt_download_host checkpointctl "$dl"
  else
    priv_apt_setup
    priv_apt_fetch "$dl" download checkpointctl \
      || die "apt-get download checkpointctl failed (private trixie config)"
  fi
  deb=$(compgen -G "$dl/checkpointctl_*.deb" | head -n1 || true)
  [[ -n $deb ]] || die "apt-get download checkpointctl produced no .deb"
  extract_deb checkpointctl "$deb"; CPC_DIR=$EXTRACTED
  cpc_debver=$(dpkg-deb -f "$deb" Version)
  cpc_upver=${cpc_debver#*:}; cpc_upver=${cpc_upver%-*}; cpc_upver=${cpc_upver%%+ds*}
  need_libc=$(dpkg-deb -f "$deb" Depends | grep -o 'libc6 (>= [^)]*)' | sed 's/^libc6 (>= //; s/)$//' | head -n1 || true)
  host_libc=$(dpkg-query -W -f='${Version}' "libc6:$ARCH" 2>/dev/null || dpkg-query -W -f='${Version}' libc6)
  runner= runner_note="# The host's glibc is new enough: runs the binary directly."
  if [[ -n $need_libc ]] && ! dpkg --compare-versions "$host_libc" ge "$need_libc"; then
    [[ $OS_VER == 12 ]] || die "checkpointctl needs libc6 >= $need_libc, host has $host_libc"
    log "checkpointctl needs libc6 >= $need_libc (host: $host_libc): bundling trixie's glibc in $CPC_DIR/glibc"
    priv_apt_fetch "$dl/libc" download libc6 || die "apt-get download libc6 failed (private trixie config)"
    libc_deb=$(compgen -G "$dl/libc/libc6_*.deb" | head -n1 || true)
    [[ -n $libc_deb ]] || die "apt-get download libc6 (trixie) produced no .deb"
    mkdir -p "$CPC_DIR/glibc"
    dpkg-deb -x "$libc_deb" "$CPC_DIR/glibc" || die "dpkg-deb -x $libc_deb failed"
    ldso=$(cd "$CPC_DIR/glibc" && find . -name 'ld-linux*.so.*' -type f | sed 's|^\./||' | head -n1)
    [[ -n $ldso ]] || die "no dynamic loader (ld-linux*.so.*) in $libc_deb"
    runner="\"\$d/glibc/$ldso\" --library-path \"\$d/glibc/$(dirname "$ldso")\" "
    runner_note="# Runs it with trixie's glibc (libc6 $(dpkg-deb -f "$libc_deb" Version)) extracted in \$d/glibc; the host's libc is not used."
  fi
  cat > "$CPC_DIR/checkpointctl" <<EOF
#!/bin/sh
# Generated by install-deps.sh: wrapper for Debian's checkpointctl $cpc_debver.
# Debian's build has no --version flag (upstream sets it via ldflags): answered here.
$runner_note
d=\$(dirname "\$(readlink -f "\$0")")
if [ "\$#" -eq 1 ] && [ "\$1" = "--version" ]; then
  echo "checkpointctl version $cpc_upver (Debian package $cpc_debver)"; exit 0
fi
exec ${runner}"\$d/usr/bin/checkpointctl" "\$@"
EOF
  chmod 0755 "$CPC_DIR/checkpointctl"
  touch "$CPC_DIR/.complete"
  rm -rf "$dl"
fi
CPC_BIN="$CPC_DIR/checkpointctl"
# The real check that the binary runs (--help exercises the Go binary; --version does not).
cpc_help=$("$CPC_BIN" --help 2>&1) || die "$CPC_BIN --help fails: $(head -n1 <<<"$cpc_help")"
grep -q "checkpoint archives" <<<"$cpc_help" || die "$CPC_BIN --help prints unexpected output: $(head -n1 <<<"$cpc_help")"
cpc_ver=$("$CPC_BIN" --version 2>&1) || die "$CPC_BIN --version fails: $(head -n1 <<<"$cpc_ver")"
link checkpointctl "$CPC_BIN"

# ================================================================ runc link + summary
rmdir "$CACHE/dl" 2>/dev/null || true
case "$RUNC" in
  /usr/sbin/runc|/usr/bin/runc) rm -f "$BIN/runc" ;;
  *) link runc "$RUNC" ;;
esac

log "done in $((SECONDS - STEP_T0))s"
log "criu $criu_ver: $CRIU_BIN"
log "runc: $(runc --version | head -n1) ($RUNC)"
log "docker-registry: $(head -n1 <<<"$reg_ver")"
log "checkpointctl: $(head -n1 <<<"$cpc_ver")"
echo "criu=$BIN/criu -> $CRIU_BIN"
echo "runc=$( [[ -L $BIN/runc ]] && echo "$BIN/runc -> $RUNC" || echo "$RUNC")"
echo "docker-registry=$BIN/docker-registry -> $REG_BIN"
echo "checkpointctl=$BIN/checkpointctl -> $CPC_BIN"
