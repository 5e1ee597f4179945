"""Implementations of the core's cluster seams (registry and channels).

``local``: in-process, for ``trackmesh standalone`` and tests. The distributed implementation
on zenoh lives beside it and implements the same Protocols; ``topology`` says how members link
(full mesh of peers, or clients of their zone's routers) and ``membership`` the key roots and
member settings.
"""
