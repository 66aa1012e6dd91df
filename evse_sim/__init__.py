"""evfleet simulator: OCPP 2.0.1 charging stations and EVs for tests and what-if studies."""
