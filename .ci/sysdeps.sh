#!/usr/bin/env bash
# Installs the system packages the test-suite needs, when running as root; otherwise says exactly
# what to install. Packages: mosquitto (MQTT broker), chromium (browser tests), g++ (the process
# core's native kernel, compiled on first use), npm (the viewer's JavaScript dependencies). With
# the argument "npm" it checks npm only (what `make demo` needs).
set -euo pipefail
need=()
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ "${1:-all}" != "npm" ]; then
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  command -v "${CXX:-g++}" >/dev/null 2>&1 || need+=(g++)  # the process core's native kernel
fi
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = "0" ]; then
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "error: missing system packages: ${need[*]}" >&2
  echo "install them with: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
