#!/usr/bin/env bash
# Make sure a tool from Debian's packages is installed, for the tests that need it.
#
#   ensure-debian-tool.sh NAME BINARY PACKAGE...
#
# - BINARY exists: nothing to do.
# - otherwise, as root (or with passwordless sudo) where apt-get exists: install the
#   PACKAGEs (without recommends).
# - if that is not possible or fails: exit 1 when CI=true (the tests needing NAME must run
#   in CI), otherwise explain and exit 0 (those tests then skip with the reason).
set -uo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 NAME BINARY PACKAGE..." >&2
    exit 2
fi
NAME=$1
BINARY=$2
shift 2
PACKAGES=("$@")

say() { echo "ensure-$NAME: $*" >&2; }

give_up() {
    say "$*"
    if [ "${CI:-}" = "true" ]; then
        say "CI=true: failing, because the tests that need $NAME must run in CI."
        exit 1
    fi
    say "continuing without $NAME; the tests that need it cannot run."
    exit 0
}

if [ -x "$BINARY" ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    give_up "$BINARY is missing and this user can neither install packages as root nor use passwordless sudo. Install it with: apt-get install --no-install-recommends ${PACKAGES[*]}"
fi

if ! command -v apt-get >/dev/null 2>&1; then
    give_up "$BINARY is missing and apt-get is not available to install it."
fi

export DEBIAN_FRONTEND=noninteractive
say "$BINARY is missing: installing ${PACKAGES[*]} with apt-get (this can take a few minutes)"
if ! "${SUDO[@]}" apt-get update -q; then
    give_up "apt-get update failed."
fi
# policy-rc.d keeps Debian from starting the package's system service (nginx): the tests
# run their own instances on their own ports.
POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null && "${SUDO[@]}" chmod +x "$POLICY" && CREATED_POLICY=1
fi
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
STATUS=$?
if [ -n "$CREATED_POLICY" ]; then
    "${SUDO[@]}" rm -f "$POLICY"
fi
if [ $STATUS -ne 0 ]; then
    give_up "apt-get install ${PACKAGES[*]} failed."
fi
if [ ! -x "$BINARY" ]; then
    give_up "installed ${PACKAGES[*]} but $BINARY is still missing."
fi
say "installed $BINARY"
exit 0
