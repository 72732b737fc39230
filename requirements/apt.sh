#!/usr/bin/env bash
# The Debian packages of the project at locked versions (requirements/apt.lock, one pkg=version a
# line).
#   apt.sh install LOCK          install each locked package that is missing or at another version.
#                                Debian's archive drops a version once a security update replaces
#                                it, so a version no longer offered gives a loud warning and the
#                                current one instead of a failed install; `make lock` then records
#                                the current one.
#   apt.sh lock LOCK PKG...      write LOCK with the current candidate version of each PKG.
set -euo pipefail

sudo_=""
[ "$(id -u)" = 0 ] || sudo_=sudo
apt_get() { $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }

installed_version() {
  dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null \
    | sed -n 's/^install ok installed //p'
}

# Whether the package index (after apt-get update) offers this exact version.
offered() {
  apt-cache madison "$1" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$2"
}

warnings=()
warn() {
  printf '\n%s\n' "******************************************************************************" >&2
  printf 'WARNING: %s\n' "$@" >&2
  printf '%s\n\n' "******************************************************************************" >&2
  warnings+=("$*")
}

install() {
  local lock=$1 pkg version todo=() updated=""
  [ -f "$lock" ] || { echo "error: $lock is missing; run: make lock" >&2; exit 1; }
  while IFS='=' read -r pkg version; do
    [[ -z "$pkg" || "$pkg" == \#* ]] && continue
    [ "$(installed_version "$pkg")" = "$version" ] || todo+=("$pkg=$version")
  done < "$lock"
  [ ${#todo[@]} = 0 ] && return 0
  echo "installing system packages: ${todo[*]}"
  apt_get update
  local exact=() current=()
  for spec in "${todo[@]}"; do
    pkg=${spec%%=*}; version=${spec#*=}
    if offered "$pkg" "$version"; then
      exact+=("$spec")
    else
      current+=("$pkg")
      warn "$pkg $version (from $lock) is no longer offered by Debian;" \
           "installing the current version instead. Run 'make lock' to record it."
    fi
  done
  # An exact version can still fail when a package it needs at the same version is gone.
  if [ ${#exact[@]} -gt 0 ] \
      && ! apt_get install -y --no-install-recommends --allow-downgrades "${exact[@]}"; then
    warn "the locked versions ${exact[*]} could not be installed together;" \
         "installing the current versions instead. Run 'make lock' to record them."
    current+=("${exact[@]%%=*}")
  fi
  if [ ${#current[@]} -gt 0 ]; then
    apt_get install -y --no-install-recommends "${current[@]}"
    # Again after apt's output, where it cannot scroll out of sight.
    local again=("${warnings[@]}")
    for w in "${again[@]}"; do warn "$w"; done
  fi
}

lock() {
  local lock=$1 pkg version; shift
  apt_get update >&2
  {
    echo "# Debian packages at exact versions, installed by make system-deps. Written by: make lock"
    for pkg in "$@"; do
      version=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')
      if [ -z "$version" ] || [ "$version" = "(none)" ]; then
        echo "error: Debian offers no package named $pkg (APT_PACKAGES in the Makefile)" >&2
        exit 1
      fi
      echo "$pkg=$version"
    done
  } > "$lock.tmp"
  mv "$lock.tmp" "$lock"
  echo "wrote $lock" >&2
}

case "${1:-}" in
  install) install "$2" ;;
  lock) shift; lock "$@" ;;
  *) echo "usage: $0 install LOCK | lock LOCK PKG..." >&2; exit 2 ;;
esac
