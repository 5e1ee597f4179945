"""Tokens and secrets."""
