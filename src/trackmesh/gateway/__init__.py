"""The gateway role: routes client requests to the best media node of its zone (docs/cluster.md)."""
