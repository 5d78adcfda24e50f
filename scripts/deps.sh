#!/usr/bin/env bash
# Installs what building and testing voxgate needs on Debian bookworm, as
# root; does nothing for packages already present. Sourced by scripts/run
# and scripts/test. Usage: deps.sh [build|test]
set -euo pipefail
want=(build-essential meson ninja-build pkg-config libmicrohttpd-dev libcjson-dev
      libcurl4-openssl-dev libssl-dev liblmdb-dev libhiredis-dev
      flite1-dev libespeak-ng-dev libpocketsphinx-dev libsphinxbase-dev pocketsphinx-en-us)
if [ "${1:-build}" = test ]; then
  want+=(libcmocka-dev clang libclang-rt-14-dev prometheus nodejs curl)
  want+=(redis-server redis-tools)   # Redis tier tests: a real redis-server per test file
  want+=(docker-compose)             # docker.test.mjs: offline "docker-compose config -q" (no engine needed)
fi
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# nodejs may come from elsewhere (NodeSource); a working node is enough.
if command -v node >/dev/null 2>&1; then
  missing=("${missing[@]/nodejs}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
