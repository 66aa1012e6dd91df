"""csms smart_charging service (see csms/context.py)."""
