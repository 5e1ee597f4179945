"""``trackmesh router``: a zone's zenoh router (cluster/topology.py, docs/cluster.md "Zone routers")."""
