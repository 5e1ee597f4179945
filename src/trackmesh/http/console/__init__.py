"""The operator's web console at ``/console`` (docs/console.md)."""
