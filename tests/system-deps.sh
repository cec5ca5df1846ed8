#!/usr/bin/env bash
# What the test suite needs beyond pip: Debian packages (a real sshd for fake pods, shellcheck for the
# shell scripts, Go for rendering Ollama templates with Go's own text/template, chromium and its
# chromedriver for the dashboard's browser tests) and the reference code
# the tests compare against (llama.cpp's converters and the chat templates it keeps, from the
# llama-cpp-python sdist on PyPI), kept in tests/.refs/.
set -euo pipefail
packages=(openssh-server shellcheck golang-go chromium chromium-driver)
missing=()
for pkg in "${packages[@]}"; do dpkg -s "$pkg" > /dev/null 2>&1 || missing+=("$pkg"); done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

python3 "$(dirname "$0")/fetch_references.py"
