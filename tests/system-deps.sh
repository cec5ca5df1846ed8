#!/usr/bin/env bash
# Debian packages the test suite uses: a real sshd for fake pods, shellcheck for the shell scripts.
set -euo pipefail
packages=(openssh-server shellcheck)
missing=()
for pkg in "${packages[@]}"; do dpkg -s "$pkg" > /dev/null 2>&1 || missing+=("$pkg"); done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
