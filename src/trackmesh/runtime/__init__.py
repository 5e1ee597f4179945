"""Thin asyncio drivers around the sans-IO cores: worker loops, the node process, signals."""
