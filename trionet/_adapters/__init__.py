"""trio adapters: one stream or socket each, built on the sans-IO core (no servers, no clients)."""
