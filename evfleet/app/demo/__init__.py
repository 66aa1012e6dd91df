"""`evfleet demo`: the closed loop (csms + optimizer + simulated fleet) on an embedded Redis."""
