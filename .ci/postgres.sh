#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (initdb, postgres) are on this machine, for the store tests
# (scheduler/store/local_postgres.py starts throwaway servers from them). Idempotent: installs with
# apt-get only when no initdb is on PATH or in /usr/lib/postgresql/*/bin.
set -euo pipefail

have_initdb() {
  command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if have_initdb; then
  echo "postgres: initdb found"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# Binaries only: no "main" cluster created and started by the package's post-install script.
$sudo mkdir -p /etc/postgresql-common
echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
echo "postgres: installing with apt-get"
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold postgresql >/dev/null

if ! have_initdb; then
  echo "postgres: installed, but still no initdb" >&2
  exit 1
fi
echo "postgres: installed"
