"""The composition root: the `evfleet` command line (`evfleet.app.cli`) and the demo
(`evfleet.app.demo`). The only code that imports more than one of csms, optimizer and evse_sim;
nothing imports it back (import-linter layers in pyproject.toml)."""
