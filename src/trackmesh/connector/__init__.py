"""The connector: the durable event log in SQL and signed, retried webhooks (docs/connector.md).

Sans-IO cores: ``events`` (the HookEvent catalogue), ``signing`` (Standard Webhooks),
``outbox`` (delivery state machine), ``rooms`` (derived room events). Drivers and storage sit
beside them and are the only modules that touch the database, the network or the clock.
"""

import logging

# Alembic announces its plugins at info level when imported (on every start): only its warnings
# matter to a node's log. Set before storage.py imports it.
logging.getLogger("alembic").setLevel(logging.WARNING)
