#!/bin/sh
# Run a command inside a fresh private network namespace where only the loopback
# interface exists (and is up). Nothing started from it can reach any other network:
# browsers, GStreamer/libnice (which also tries UPnP/SSDP multicast) and aiortc all stay on 127.0.0.1.
#
#   scripts/in-netns.sh .venv/bin/pytest tests/e2e
#
# The command is exec'ed, so its exit code passes through unchanged. If we are already
# inside such a namespace (only `lo` in /sys/class/net and /proc/net/dev) it is exec'ed directly.
#
# Detail: /sys/class/net shows the interfaces of the namespace that *mounted* sysfs, so a bare
# `unshare -n` still lists eth0 there. We therefore also unshare the mount namespace (-m, private
# propagation, host mounts untouched) and mount a fresh sysfs, so /sys/class/net tells the truth.
set -eu

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

ifaces() {
    # Interfaces of the current network namespace, from both views; prints one name per line.
    { ls /sys/class/net; sed -n 's/^ *\([^:]*\):.*/\1/p' /proc/net/dev | grep -v '^Inter\|^ face'; } | sort -u
}

if [ "${TRACKMESH_NETNS_STAGE:-}" = "inner" ]; then
    # Freshly unshared: make /sys/class/net reflect this namespace, bring lo up.
    mount -t sysfs sysfs /sys
    ip link set lo up
    unset TRACKMESH_NETNS_STAGE
    if [ "$(ifaces)" != "lo" ]; then
        echo "$0: interfaces other than lo inside the new namespace: $(ifaces | tr '\n' ' ')" >&2
        exit 3
    fi
    exec "$@"
fi

if [ "$(ifaces)" = "lo" ]; then
    ip link set lo up 2>/dev/null || true
    exec "$@"
fi

command -v unshare >/dev/null 2>&1 || { echo "$0: unshare not found (apt-get install util-linux)" >&2; exit 3; }
command -v ip >/dev/null 2>&1 || { echo "$0: ip not found (apt-get install iproute2)" >&2; exit 3; }

if [ "$(id -u)" = "0" ]; then
    set -- unshare -n -m --propagation private "$0" "$@"
else
    # Unprivileged: needs user namespaces; root inside them is enough for lo and sysfs.
    set -- unshare -r -n -m --propagation private "$0" "$@"
fi
TRACKMESH_NETNS_STAGE=inner exec "$@"
