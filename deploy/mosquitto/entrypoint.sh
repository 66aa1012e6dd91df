#!/bin/sh
# Write Mosquitto's password file from the environment (secrets), then run the broker.
# Every account needs its password: a missing one stops the start instead of leaving it open.
set -eu
: "${MQTT_CSMS_PASSWORD:?set MQTT_CSMS_PASSWORD}"
: "${MQTT_GRID_PASSWORD:?set MQTT_GRID_PASSWORD}"
: "${MQTT_VIEWER_PASSWORD:?set MQTT_VIEWER_PASSWORD}"
passwd=${MOSQUITTO_PASSWD_FILE:-/mosquitto/data/passwd}
conf=${MOSQUITTO_CONF:-/mosquitto/config/mosquitto.conf}
umask 077
rm -f "$passwd"
mosquitto_passwd -b -c "$passwd" csms "$MQTT_CSMS_PASSWORD"
mosquitto_passwd -b "$passwd" grid "$MQTT_GRID_PASSWORD"
mosquitto_passwd -b "$passwd" viewer "$MQTT_VIEWER_PASSWORD"
chown mosquitto:mosquitto "$passwd" 2>/dev/null || true
exec mosquitto -c "$conf"
