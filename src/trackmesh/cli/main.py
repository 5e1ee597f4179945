"""``trackmesh standalone|gateway|media``: start a node; ``trackmesh dev-cluster``: a local cluster;
``trackmesh record compose``: one file of a recorded room session (cli/record.py).

Every flag can also be set with an environment variable ``TRACKMESH_<FLAG>`` (e.g.
``TRACKMESH_HTTP_PORT=3001``). A bad value stops the process with one line naming the flag
and the accepted values, and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from trackmesh import __version__
from trackmesh.cli.parser import OneLineParser
from trackmesh.config import FLAGS, ConfigError, env_name, resolve, warnings_of
from trackmesh.logs import setup_logging

ROLES = {
    "standalone": "gateway and media roles in one process, on embedded defaults",
    "gateway": "route client requests to the best media node of the zone (needs the cluster)",
    "media": "run transports and the media core",
    "router": "a zone's zenoh router: relays cluster traffic for the zone's members (--cluster-mode routers)",
    "connector": "the zone's connector: stores the zone's events (--connector-db), sends the webhooks, "
    "serves the log API",
    "console": "the operator's console for the whole cluster at /console: zones, nodes, rooms, timelines "
    "(docs/console.md)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="trackmesh", description="trackmesh: a decentralized, low-latency media server")
    parser.add_argument("--version", action="version", version=f"trackmesh {__version__}")
    sub = parser.add_subparsers(dest="role", metavar="ROLE", required=True, parser_class=OneLineParser)
    sub.add_parser(
        "dev-cluster",
        help="a local cluster on loopback: gateways and media nodes as separate processes (see dev-cluster --help)",
        add_help=False,
    )
    sub.add_parser(
        "record",
        help="work with recordings on disk: record compose <session folder> -o out.mp4 (see record --help)",
        add_help=False,
    )
    for role, help_text in ROLES.items():
        p = sub.add_parser(role, help=help_text, description=help_text)
        for flag in FLAGS:
            if role not in flag.roles:
                continue
            help_text = f"{flag.help} [env {env_name(flag.name)}]"
            if flag.switch:
                action = argparse.BooleanOptionalAction if flag.negatable else "store_true"
                p.add_argument(flag.name, action=action, default=None, help=help_text)
            else:
                p.add_argument(flag.name, metavar=flag.metavar, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dev-cluster"]:
        from trackmesh.cli.dev_cluster import main as dev_cluster_main

        return dev_cluster_main(argv[1:])
    if argv[:1] == ["record"]:
        from trackmesh.cli.record import main as record_main

        return record_main(argv[1:])
    args = build_parser().parse_args(argv)
    role = args.role
    try:
        config = resolve(role, vars(args))
    except ConfigError as exc:
        print(f"trackmesh: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_format)
    for warning in warnings_of(config):
        logging.getLogger("trackmesh.config").warning(warning)
    from trackmesh.runtime.loop import new_event_loop
    from trackmesh.runtime.node import Node, StartupError, print_banner

    node: Node
    if role == "media":
        from trackmesh.runtime.cluster_node import ClusterMediaNode

        node = ClusterMediaNode(config)
    elif role == "gateway" and config.global_gateway:
        from trackmesh.gateway.global_gateway import GlobalGatewayNode

        node = GlobalGatewayNode(config)
    elif role == "gateway":
        from trackmesh.gateway.node import GatewayNode

        node = GatewayNode(config)
    elif role == "connector":
        from trackmesh.runtime.connector_node import ConnectorNode

        node = ConnectorNode(config)
    elif role == "console":
        from trackmesh.runtime.console_node import ConsoleNode

        node = ConsoleNode(config)
    elif role == "router":
        from trackmesh.router.node import RouterNode

        node = RouterNode(config)
    else:
        node = Node(config)
    node.on_started = print_banner
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(node.run())
    except StartupError as exc:
        print(f"trackmesh: {exc}", file=sys.stderr)
        return 2
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
