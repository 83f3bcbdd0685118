#!/usr/bin/env bash
# Makes sure Debian's PgBouncer and HAProxy are installed, for what runs JobPath as it is
# deployed at scale: the pooler tests (tests/api/pooler.rs, which run this before they start
# PgBouncer), the scale-out benchmark (bench/scale) and the fault run (bench/faults).
#
# As root it installs the packages; several test runs may start at once, so the install is
# serialised with flock and apt waits for dpkg's own lock instead of failing. The packages'
# own services are not used (every caller starts its own process, on its own port, with its
# own configuration), so any that the install started are stopped again. As another user it
# cannot install, and says how to.
set -euo pipefail

have() { [ -x /usr/sbin/pgbouncer ] && [ -x /usr/sbin/haproxy ]; }
if have; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: this needs Debian's pgbouncer and haproxy; install them with" \
        "'sudo apt-get install -y pgbouncer haproxy' (or run as root to have them installed)" >&2
    exit 1
fi

exec 9>/tmp/jobpath-scale-tools-install.lock
flock -w 900 9
if have; then
    exit 0 # another run installed them while this one waited
fi
echo "installing pgbouncer and haproxy (Debian packages)" >&2
export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=600 -qq "$@"; }
apt_get update
# policy-rc.d exit 101: the packages' post-install scripts start no service.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
fi
apt_get install -y pgbouncer haproxy >/dev/null
# sed, not head: head would exit after one line, the tool would die of SIGPIPE writing the
# rest, and pipefail would fail the install that just succeeded.
/usr/sbin/pgbouncer --version | sed -n 1p >&2
/usr/sbin/haproxy -v | sed -n 1p >&2
