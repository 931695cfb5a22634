#!/usr/bin/env bash
# Install the system tools some tests use, from apt:
#  - espeak-ng, the local text-to-speech engine behind `talksplat drive --text` (its tests skip
#    without it);
#  - a headless browser for the viewer's browser test (tests/test_viewer_browser.py):
# chromium and its chromedriver from the distribution's apt repositories (Debian: `chromium`,
# `chromium-driver`; Ubuntu: `chromium-browser`, `chromium-chromedriver`).  Nothing is downloaded
# from anywhere else; the test drives them with the `selenium` pip package (the `test` extra),
# pointed at /usr/bin/chromedriver so Selenium Manager never fetches a driver.
#
# Needs root or password-less sudo.  Exits non-zero when nothing usable could be installed; the
# browser test then skips and says why.  Not part of `scripts/setup.sh`: the rest of the suite
# needs no browser.
set -uo pipefail

works() { "$1" --version >/dev/null 2>&1; }
find_browser() {
    for b in chromium chromium-browser; do
        if command -v "$b" >/dev/null 2>&1 && works "$(command -v "$b")"; then command -v "$b"; return 0; fi
    done
    return 1
}
find_driver() {
    for d in /usr/bin/chromedriver /usr/lib/chromium/chromedriver /usr/lib/chromium-browser/chromedriver; do
        if [ -x "$d" ] && works "$d"; then echo "$d"; return 0; fi
    done
    return 1
}

if find_browser >/dev/null && find_driver >/dev/null && command -v espeak-ng >/dev/null 2>&1; then
    echo "install_test_tools: $("$(find_browser)" --version 2>/dev/null) with $("$(find_driver)" --version 2>/dev/null | cut -d' ' -f1-2) already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "install_test_tools: need root or password-less sudo to apt-get install chromium" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_test_tools: no apt-get on this machine: install chromium and chromedriver yourself" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() { "${SUDO[@]}" apt-get install -y -q --no-install-recommends "$@"; }
"${SUDO[@]}" apt-get update -q || echo "install_test_tools: apt-get update failed; trying the cached lists" >&2
# Debian names first; Ubuntu's (on Ubuntu >= 20.04 these are snap wrappers that do not run in
# containers: the check below catches that).
apt_install espeak-ng || echo "install_test_tools: apt-get could not install espeak-ng (the --text tests will skip)" >&2
apt_install chromium chromium-driver fonts-dejavu-core \
    || apt_install chromium-browser chromium-chromedriver fonts-dejavu-core \
    || { echo "install_test_tools: apt-get could not install chromium" >&2; exit 1; }

if ! browser=$(find_browser); then
    echo "install_test_tools: chromium was installed but does not run (a snap wrapper outside snapd?)" >&2
    exit 1
fi
if ! driver=$(find_driver); then
    echo "install_test_tools: chromedriver was not found or does not run" >&2
    exit 1
fi
echo "install_test_tools: $("$browser" --version 2>/dev/null) with $("$driver" --version 2>/dev/null | cut -d' ' -f1-2)"
