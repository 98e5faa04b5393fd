"""Servers and clients: the nursery-scoped endpoints built on the adapters."""
