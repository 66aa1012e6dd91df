"""csms api service (see csms/context.py)."""
