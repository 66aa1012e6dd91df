"""ISO 15118 for simulated stations: a modelled HLC state machine and a bridge to real Josev processes."""
