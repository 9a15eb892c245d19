#!/usr/bin/env bash
# One command that sets up everything on a fresh machine (Debian/Ubuntu, Python 3.11):
# the sandbox's system packages, a virtual environment in .venv, the CPU build of torch
# (installed first so nothing pulls CUDA wheels), and the project with its dev extra.
# Usage: bash scripts/setup.sh [--browser]   (--browser adds Chromium + chromedriver for the UI tests)
set -euo pipefail
cd "$(dirname "$0")/.."

export DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1 PIP_DISABLE_PIP_VERSION_CHECK=1

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
pkgs=()
command -v bwrap >/dev/null 2>&1 || pkgs+=(bubblewrap)
if [ "${1:-}" = "--browser" ]; then
  # headless Chromium and its WebDriver (selenium drives it in tests/flows/test_ui_browser.py)
  command -v chromium >/dev/null 2>&1 || pkgs+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || pkgs+=(chromium-driver)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "[setup] installing system packages: ${pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}"
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
# pip's notes about unreachable local index folders are noise here; errors still show
quiet() { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
echo "[setup] installing torch (CPU build) and the project"
quiet .venv/bin/pip install -q "torch==2.13.0"
# DeepSpeed (dev extra) ships only an sdist whose setup.py imports torch: built against the
# torch above (no build isolation), no C++/CUDA ops compiled (they are JIT-built on use).
quiet env DS_BUILD_OPS=0 .venv/bin/pip install -q --no-build-isolation "deepspeed==0.19.8"
quiet .venv/bin/pip install -q -e ".[dev]"
echo "[setup] done. Try: .venv/bin/astor demo"
