"""The side-by-side comparison with Janus 1.1.2 (not installed): ``python -m bench.janus`` from a checkout.

It adds a "janus" server to the shipped load tester's command (``trackmesh.loadtest.cli``) and runs the
same scenarios against both servers: server.py starts Janus, videoroom.py (S1) and rooms.py (S2/S3)
signal with its VideoRoom plugin, multi.py plugs VideoRoom into the S2/S3 run. It imports
``trackmesh.loadtest``; nothing in ``src/`` imports it.
"""
