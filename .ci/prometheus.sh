#!/usr/bin/env bash
# Makes sure `promtool` is on this machine, for tests/deploy (promtool check rules / test rules on
# deploy/prometheus). Idempotent: installs the Debian package `prometheus` with apt-get only when no
# promtool is on PATH. The Prometheus service is never started: a temporary policy-rc.d forbids the
# package's post-install script from starting it (and a container without systemd cannot anyway).
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
  echo "prometheus: promtool found ($(command -v promtool))"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

# invoke-rc.d (used by the postinst) asks /usr/sbin/policy-rc.d; exit 101 = "action forbidden".
# Only add one when the machine has none, and remove exactly that one afterwards.
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  added_policy=1
fi
cleanup() { if [ -n "$added_policy" ]; then $sudo rm -f "$policy"; fi; }
trap cleanup EXIT

echo "prometheus: installing with apt-get"
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold prometheus >/dev/null

if ! command -v promtool >/dev/null 2>&1; then
  echo "prometheus: installed, but still no promtool" >&2
  exit 1
fi
echo "prometheus: installed ($(promtool --version 2>&1 | head -n 1))"
