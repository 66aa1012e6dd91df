"""OCPP 1.6J: the same store, events and command protocol as OCPP 2.0.1 (docs/ocpp16.md).

Modules: `schemas` (1.6 schemas and CALLERROR spelling), `mapping` (pure 1.6 <-> store
shapes), one handler module per functional block (`provisioning`, `authorization`,
`availability`, `transactions`, `meter_values`, `diagnostics`), `station` (the handler),
`commands` (2.0.1-shaped commands translated for a 1.6 station), `configuration`
(GetConfiguration after boot) and `smart_charging` (profile rules of 1.6).
"""
