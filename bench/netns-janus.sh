#!/bin/sh
# Run a command in a fresh private network namespace with only `lo` and a veth pair v0/v1
# whose v0 end carries 127.0.0.2/32 (Janus never gathers candidates on loopback interfaces,
# see shared/research/ecosystem.md 4.2). Nothing in it can reach any other network:
# the veth's peer stays in the same namespace and there is no route off the box.
#
#   bench/netns-janus.sh .venv/bin/python -m bench.janus s1 --against janus --cores 0
#
# (trackmesh-bench and bench.janus do this by themselves; the script is for running janus or clients by hand.)
set -eu
if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi
if [ "$(id -u)" = "0" ]; then
    set -- unshare -n sh -c '
        set -e
        ip link set lo up
        ip link add v0 type veth peer name v1
        ip link set v0 addrgenmode none; ip link set v1 addrgenmode none
        ip addr add 127.0.0.2/32 dev v0; ip link set v0 up; ip link set v1 up
        exec "$@"' sh "$@"
else
    set -- unshare -r -n sh -c '
        set -e
        ip link set lo up
        ip link add v0 type veth peer name v1
        ip link set v0 addrgenmode none; ip link set v1 addrgenmode none
        ip addr add 127.0.0.2/32 dev v0; ip link set v0 up; ip link set v1 up
        exec "$@"' sh "$@"
fi
TRACKMESH_BENCH_NETNS=1 exec "$@"
