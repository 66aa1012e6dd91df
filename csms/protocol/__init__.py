"""OCPP 2.0.1 adapter over the mobilityhouse `ocpp` library: WebSocket server, station handler
(one mixin per functional block), connection registry and the node-side command executor."""
