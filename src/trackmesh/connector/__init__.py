"""The connector: the durable event log in SQL and signed, retried webhooks (docs/connector.md).

Sans-IO cores: ``events`` (the HookEvent catalogue), ``signing`` (Standard Webhooks),
``outbox`` (delivery state machine), ``rooms`` (derived room events). Drivers and storage sit
beside them and are the only modules that touch the database, the network or the clock.
"""
