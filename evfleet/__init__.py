"""The shared contract of evfleet: what csms, optimizer and evse_sim agree on.

Depends on none of the three products; all of them import it. Modules:

- `evfleet.clock`: the one clock (real or scaled simulated time) and the shared-clock protocol;
- `evfleet.keys`: every Redis key and stream name (`Keys`) and transaction refs (`tx_ref`);
- `evfleet.events`: the typed events on the `evfleet:events` stream;
- `evfleet.isotime`: the ISO 8601 parser and formatters (naive timestamps are UTC);
- `evfleet.profile`: the `ChargingProfile` value type and the A <-> W conversion;
- `evfleet.jsonsafe`: JSON from untrusted or stored text (no NaN, no deep nesting);
- `evfleet.config`: the settings mechanism of every command (flags > environment > TOML file);
- `evfleet.logs`: the logging setup of every command (text or JSON lines, context fields).
"""
