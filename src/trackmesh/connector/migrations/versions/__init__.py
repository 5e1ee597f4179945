"""Alembic migrations of the connector's database (run by ``Storage.migrate``)."""
