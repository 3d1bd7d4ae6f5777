#!/usr/bin/env bash
# Installs the Debian packages the local environment needs, only when they are missing.
# Needs root (as on the development machines and CI); prints what it does.
#
#   install-system-deps.sh          everything `make env` and `make test` need
#   install-system-deps.sh image    only what deploy/image/build.sh needs (buildah, debootstrap)
set -euo pipefail
need=()
command -v buildah >/dev/null || need+=(buildah)
command -v debootstrap >/dev/null || need+=(debootstrap)
install_needed() {
  ((${#need[@]})) || return 0
  echo "[sysdeps] installing Debian packages: ${need[*]} (log: /tmp/tidal-apt.log)"
  apt-get update >/tmp/tidal-apt.log 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >>/tmp/tidal-apt.log 2>&1
}
if [[ ${1:-} == image ]]; then
  install_needed
  echo "[sysdeps] ok: $(buildah --version), debootstrap $(debootstrap --version | cut -d' ' -f2)"
  exit 0
fi
command -v redis-server >/dev/null || need+=(redis-server)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v mariadb-install-db >/dev/null || need+=(mariadb-server)
[[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || need+=(rabbitmq-server)
command -v prometheus >/dev/null || [[ -x /usr/bin/prometheus ]] || need+=(prometheus)
command -v mvn >/dev/null || need+=(maven)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v git >/dev/null || need+=(git)
install_needed
# Go >= 1.24 is a prerequisite (the development machines and CI have it in /usr/local/go).
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
  echo "[sysdeps] go is in /usr/local/go/bin but not on PATH: export PATH=\$PATH:/usr/local/go/bin" >&2
  exit 1
fi
command -v go >/dev/null || { echo "[sysdeps] Go >= 1.24 is required and was not found" >&2; exit 1; }
echo "[sysdeps] ok: $(redis-server --version | cut -d' ' -f3), prometheus $(prometheus --version 2>&1 | head -1 | cut -d' ' -f3), $(go version | cut -d' ' -f3), java $(java -version 2>&1 | head -1 | cut -d'"' -f2)"
