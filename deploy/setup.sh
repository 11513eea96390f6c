#!/bin/sh
# Installs the Debian packages tenure needs and builds it into build/.
# Idempotent: packages already present are not reinstalled; the build is
# incremental. Usage: deploy/setup.sh [--no-build] [-- extra cmake args]
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${TENURE_BUILD_DIR:-$ROOT/build}

PKGS="build-essential cmake pkg-config libuv1-dev libprotobuf-c-dev \
protobuf-c-compiler libcmocka-dev libhttp-parser-dev libjansson-dev \
curl iproute2 procps prometheus chromium nftables e2fsprogs \
clang libclang-rt-dev"

if ! command -v dpkg-query >/dev/null 2>&1 || [ ! -r /etc/os-release ]; then
    echo "setup: this script installs Debian packages (Debian 12 or 13);" \
         "elsewhere install the equivalents of: $PKGS libraft-dev>=0.22.1" >&2
    exit 1
fi

SUDO=
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
fi

. /etc/os-release
CODENAME=${VERSION_CODENAME:-bookworm}

# True when libraft-dev >= 0.22 is installed.
have_raft() {
    v=$(dpkg-query -W -f='${Version}' libraft-dev 2>/dev/null || true)
    [ -n "$v" ] && dpkg --compare-versions "$v" ge 0.22.1
}

missing=
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ] || ! have_raft; then
    if [ -n "$SUDO" ] && ! command -v sudo >/dev/null 2>&1; then
        have_raft || missing="$missing libraft-dev(>=0.22.1)"
        echo "setup: packages to install:$missing;" \
             "run this script as root (or install sudo)" >&2
        exit 1
    fi
    if [ "$CODENAME" = "bookworm" ]; then
        # libraft 0.22.1 lives in bookworm-backports. Derive the suite entry
        # from this machine's own apt configuration: the same URIs and
        # Signed-By as its bookworm stanza, never a host name of ours.
        src=/etc/apt/sources.list.d/debian.sources
        dst=/etc/apt/sources.list.d/backports.sources
        if [ ! -f "$dst" ] && [ -f "$src" ]; then
            awk -v RS= '/Suites:[^\n]*bookworm([ \n]|$)/ && !/security/ { print; exit }' "$src" |
                awk '/^(Types|URIs|Signed-By):/ { print }
                     END { print "Suites: bookworm-backports"; print "Components: main" }' |
                $SUDO tee "$dst" >/dev/null
        elif [ ! -f "$dst" ] && [ -f /etc/apt/sources.list ]; then
            uri=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
            echo "deb $uri bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/backports.list >/dev/null
        fi
        RAFT_FROM="-t bookworm-backports"
    else
        RAFT_FROM=
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q --no-install-recommends $PKGS
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q --no-install-recommends $RAFT_FROM libraft-dev
    # We only want promtool from the prometheus package: if this run
    # installed it, do not leave its server running on machines with systemd.
    case " $missing " in
    *" prometheus "*)
        if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
            $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
        fi
        ;;
    esac
fi

if ! have_raft; then
    echo "setup: libraft-dev >= 0.22.1 is required (bookworm-backports)" >&2
    exit 1
fi

[ "${1:-}" = "--no-build" ] && exit 0
[ "${1:-}" = "--" ] && shift

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE="${TENURE_BUILD_TYPE:-RelWithDebInfo}" "$@" >/dev/null
cmake --build "$BUILD" -j "$(nproc)"
