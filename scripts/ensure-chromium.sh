#!/usr/bin/env bash
# Make sure Debian's Chromium is installed at /usr/bin/chromium, for the browser tests.
#
# - /usr/bin/chromium exists: nothing to do.
# - otherwise, as root (or with passwordless sudo) where apt-get exists: install the Debian
#   packages `chromium` and `fonts-dejavu-core` (without recommends).
# - if that is not possible or fails: exit 1 when CI=true, otherwise explain and exit 0
#   (the browser tests cannot run then).
set -uo pipefail

CHROMIUM=/usr/bin/chromium
PACKAGES=(chromium fonts-dejavu-core)

say() { echo "ensure-chromium: $*" >&2; }

give_up() {
    say "$*"
    if [ "${CI:-}" = "true" ]; then
        say "CI=true: failing, because the browser tests must run in CI."
        exit 1
    fi
    say "continuing without Chromium; the browser tests cannot run."
    exit 0
}

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    give_up "$CHROMIUM is missing and this user can neither install packages as root nor use passwordless sudo. Install it with: apt-get install --no-install-recommends ${PACKAGES[*]}"
fi

if ! command -v apt-get >/dev/null 2>&1; then
    give_up "$CHROMIUM is missing and apt-get is not available to install it. Install Chromium so that $CHROMIUM exists."
fi

export DEBIAN_FRONTEND=noninteractive
say "$CHROMIUM is missing: installing ${PACKAGES[*]} with apt-get (this can take a few minutes)"
if ! "${SUDO[@]}" apt-get update -q; then
    give_up "apt-get update failed."
fi
if ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; then
    give_up "apt-get install ${PACKAGES[*]} failed."
fi
if [ ! -x "$CHROMIUM" ]; then
    give_up "installed ${PACKAGES[*]} but $CHROMIUM is still missing."
fi
say "installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
exit 0
