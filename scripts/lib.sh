# Shared helpers for the development scripts. Sourced, not executed.
# shellcheck shell=bash

MLHPC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MLHPC_CACHE=${MLHPC_CACHE:-/var/cache/mlhpc}
MLHPC_DEBIAN_MIRROR=${MLHPC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
export MLHPC_ROOT MLHPC_CACHE MLHPC_DEBIAN_MIRROR

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

require_root() {
  [ "$(id -u)" -eq 0 ] || die "run as root: podman hosts are rootful"
}
