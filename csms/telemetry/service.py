"""Entry point of the MQTT telemetry service for the composition root (on when mqtt_url is set)."""

from __future__ import annotations

import logging

from csms.api.reader import StateReader
from csms.api.site_inputs import SiteInputWriter
from csms.context import CsmsContext
from csms.leases import run_singleton
from csms.telemetry.bridge import MqttBridge
from evfleet.logs import redact

log = logging.getLogger(__name__)


async def run(ctx: CsmsContext) -> None:
    """Bridge the event stream to MQTT and MQTT site inputs to Redis until cancelled."""
    settings = ctx.settings
    mqtt_url = settings.mqtt_url
    if not mqtt_url:
        return
    reader = StateReader(ctx.redis, ctx.keys, ctx.clock, settings.default_site,
                         settings.default_site_limit_kw)
    bridge = MqttBridge(reader, SiteInputWriter(ctx.redis, ctx.keys, ctx.clock), mqtt_url,
                        prefix=settings.mqtt_topic_prefix, client_id=f"evfleet-{ctx.node_id}")

    async def serve() -> None:
        ctx.extras["mqtt_bridge"] = bridge
        log.info("mqtt: bridging to %s (prefix %s)", redact(mqtt_url), settings.mqtt_topic_prefix)
        try:
            await bridge.run()
        finally:
            ctx.extras.pop("mqtt_bridge", None)

    # one bridge per deployment: every node may be configured with it, one node runs it
    await run_singleton(ctx.redis, ctx.keys.service_lease(f"mqtt-bridge:{settings.mqtt_topic_prefix}"),
                        ctx.node_id, settings.service_lease_ttl_s, serve)
