"""csms telemetry service (see csms/context.py)."""
