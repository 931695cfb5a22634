#!/usr/bin/env bash
# Install espeak-ng, the local text-to-speech engine behind `talksplat drive --text` (and more test
# speech), from apt.  Needs root or password-less sudo; exits non-zero when it cannot install it
# (the tests that need it then skip and say why).
set -uo pipefail

if command -v espeak-ng >/dev/null 2>&1; then
    echo "install_espeak: $(espeak-ng --version | head -1) already installed"
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "install_espeak: need root or password-less sudo to apt-get install espeak-ng" >&2
    exit 1
fi
command -v apt-get >/dev/null 2>&1 || { echo "install_espeak: no apt-get: install espeak-ng yourself" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get install -y -q --no-install-recommends espeak-ng \
    || { "${SUDO[@]}" apt-get update -q && "${SUDO[@]}" apt-get install -y -q --no-install-recommends espeak-ng; } \
    || { echo "install_espeak: apt-get could not install espeak-ng" >&2; exit 1; }
echo "install_espeak: $(espeak-ng --version | head -1)"
