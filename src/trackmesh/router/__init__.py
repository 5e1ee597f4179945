"""``trackmesh router``: a zone's zenoh router (cluster/topology.py, docs/cluster.md "Zone routers").

A driver: it may import ``cluster/``, ``runtime/`` (the Node lifecycle), ``http/`` helpers,
``security/`` and ``config``; only ``cli/`` imports it.
"""
