#!/usr/bin/env bash
# Makes sure Debian's `chromium` is installed, for the browser tests of /docs, /redoc and the
# account pages (tests/api/browser.rs runs this before it starts the browser; CI gets
# chromium the same way).
#
# As root it installs the package; several test runs may start at once, so the install is
# serialised with flock and apt waits for dpkg's own lock instead of failing. As another
# user it cannot install, and says how to.
set -euo pipefail

if command -v chromium >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: the browser test needs Debian's chromium; install it with" \
        "'sudo apt-get install -y chromium' (or run the tests as root to have it installed)" >&2
    exit 1
fi

exec 9>/tmp/jobpath-chromium-install.lock
flock -w 900 9
if command -v chromium >/dev/null; then
    exit 0 # another run installed it while this one waited
fi
echo "installing chromium (Debian package) for the browser test" >&2
export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=600 -qq "$@"; }
apt_get update
apt_get install -y chromium fonts-liberation >/dev/null
chromium --version >&2
