#!/usr/bin/env bash
# criu-runtime-packages.sh BINARY - print, one a line, the Debian packages that hold the shared
# libraries BINARY links against. The node image's CRIU stage builds criu with -dev packages; the
# final stage installs only these (the runtime libraries), whatever their names are on that Debian
# release (libgnutls30 on 12, libgnutls30t64 on 13, ...).
set -euo pipefail
bin="${1:?usage: criu-runtime-packages.sh BINARY}"
# ldd prints "libfoo.so.1 => /lib/x86_64-linux-gnu/libfoo.so.1 (0x...)"; a missing library is a
# build that cannot run here: fail rather than install an image that cannot checkpoint.
if ldd "$bin" | grep -q "not found"; then
    ldd "$bin" >&2
    echo "criu-runtime-packages.sh: $bin needs libraries that are not installed" >&2
    exit 1
fi
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r lib; do
    # dpkg knows a file by the path its package ships; after the /usr merge that may be the
    # /usr/lib path the library resolves to, or the /lib path ldd printed.
    owner="$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null || true)"
    if [[ -z "$owner" ]]; then
        echo "criu-runtime-packages.sh: no Debian package holds $lib" >&2
        exit 1
    fi
    # "libfoo1:amd64: /path" -> libfoo1
    echo "${owner%%:*}"
done | sort -u
