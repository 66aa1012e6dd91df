// An independent OCPP 2.0.1 charging station written with ocpp-rpc in strict mode: every
// message in both directions is validated against the OCPP 2.0.1 JSON schemas that ship
// with ocpp-rpc. Anything the csms sends that fails validation ends this script with an error.
//
//   node station.js WS_BASE_URL STATION_ID PASSWORD ID_TOKEN TRANSACTION_ID
//
// Reports every step and every CALL from the csms as one JSON object per line on stdout; the
// Python test (tests/thirdparty/test_ocpp_rpc_station.py) drives the csms side meanwhile.
// Script: BootNotification, StatusNotification, Heartbeat, Authorize, TransactionEvent
// Started, MeterValues, TransactionEvent Updated, a disconnect during which one Updated event
// is queued, reconnect and send it (offline: true), NotifyEVChargingNeeds; then it answers
// what the csms sends: SetChargingProfile, GetCompositeSchedule, RequestStopTransaction (then
// TransactionEvent Ended) and Reset (then it exits 0).
'use strict';

const { RPCClient, createRPCError } = require('ocpp-rpc');

const [url, identity, password, idToken, txId] = process.argv.slice(2);
const say = (event, data = {}) => process.stdout.write(JSON.stringify({ event, ...data }) + '\n');
const now = () => new Date().toISOString();
const fail = (err) => {
  say('error', { message: String(err && err.stack ? err.stack : err) });
  process.exit(1);
};

let seqNo = 0;
let energyWh = 1000;
const profiles = [];
let stopRequested = null;
let resetRequested = null;
let selfCheck = false;

function meterValue(ts) {
  return [{
    timestamp: ts,
    sampledValue: [
      { value: energyWh, measurand: 'Energy.Active.Import.Register', unitOfMeasure: { unit: 'Wh' } },
      { value: 11000, measurand: 'Power.Active.Import', unitOfMeasure: { unit: 'W' } },
    ],
  }];
}

function txEvent(eventType, triggerReason, ts, extra = {}) {
  const event = {
    eventType, timestamp: ts, triggerReason, seqNo: seqNo++,
    transactionInfo: { transactionId: txId, chargingState: 'Charging' },
    evse: { id: 1, connectorId: 1 },
    meterValue: meterValue(ts),
    ...extra,
  };
  if (eventType === 'Ended') {
    event.transactionInfo = { transactionId: txId, chargingState: 'EVConnected', stoppedReason: 'Remote' };
  }
  return event;
}

function newClient() {
  const cli = new RPCClient({
    endpoint: url, identity, password, protocols: ['ocpp2.0.1'], strictMode: true,
    reconnect: false, callTimeoutMs: 20000,
  });
  cli.on('strictValidationFailure', (ev) => !selfCheck && say('strict_failure', {
    method: ev.method, outbound: ev.outbound, isCall: ev.isCall, error: String(ev.error && ev.error.message),
    params: ev.params, result: ev.result,
  }));
  cli.on('badMessage', (ev) => say('bad_message', { error: String(ev.error && ev.error.message) }));
  cli.on('close', (ev) => say('closed', { code: ev.code, reason: String(ev.reason || '') }));

  cli.handle('GetBaseReport', ({ params }) => {
    say('got_call', { method: 'GetBaseReport', params });
    setTimeout(() => cli.call('NotifyReport', {
      requestId: params.requestId, generatedAt: now(), seqNo: 0, tbc: false,
      reportData: [
        { component: { name: 'EVSE', evse: { id: 1 } }, variable: { name: 'Power' },
          variableAttribute: [{ type: 'Actual', value: '0' }],
          variableCharacteristics: { dataType: 'decimal', unit: 'W', maxLimit: 22000, supportsMonitoring: false } },
        { component: { name: 'EVSE', evse: { id: 1 } }, variable: { name: 'SupplyPhases' },
          variableAttribute: [{ type: 'Actual', value: '3' }],
          variableCharacteristics: { dataType: 'integer', supportsMonitoring: false } },
      ],
    }).then(() => say('report_sent')).catch(fail), 10);
    return { status: 'Accepted' };
  });
  cli.handle('SetChargingProfile', ({ params }) => {
    say('got_call', { method: 'SetChargingProfile', params });
    profiles.push(params);
    return { status: 'Accepted' };
  });
  cli.handle('GetCompositeSchedule', ({ params }) => {
    say('got_call', { method: 'GetCompositeSchedule', params });
    const tx = profiles.filter((p) => p.chargingProfile.chargingProfilePurpose === 'TxProfile').pop();
    const schedule = tx ? tx.chargingProfile.chargingSchedule[0] : null;
    if (!schedule) return { status: 'Rejected' };
    return {
      status: 'Accepted',
      schedule: {
        evseId: params.evseId, duration: params.duration, scheduleStart: now(),
        chargingRateUnit: params.chargingRateUnit || schedule.chargingRateUnit,
        chargingSchedulePeriod: schedule.chargingSchedulePeriod.map((p) => ({
          startPeriod: p.startPeriod, limit: p.limit, ...(p.numberPhases ? { numberPhases: p.numberPhases } : {}),
        })),
      },
    };
  });
  cli.handle('RequestStopTransaction', ({ params }) => {
    say('got_call', { method: 'RequestStopTransaction', params });
    stopRequested = params;
    return { status: params.transactionId === txId ? 'Accepted' : 'Rejected' };
  });
  cli.handle('Reset', ({ params }) => {
    say('got_call', { method: 'Reset', params });
    resetRequested = params;
    return { status: 'Accepted' };
  });
  cli.handle(({ method, params }) => {
    say('got_call', { method, params, unexpected: true });
    throw createRPCError('NotImplemented');
  });
  return cli;
}

const until = async (cond, what, timeoutMs = 60000) => {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

async function main() {
  let cli = newClient();
  await cli.connect();
  say('connected', { protocol: cli.protocol });
  // strict mode is on: an invalid call is refused here, before it is sent
  selfCheck = true;
  const refused = await cli.call('Heartbeat', { notInTheSchema: 1 }).then(() => false, (e) => e);
  selfCheck = false;
  if (!refused) throw new Error('strict mode let an invalid Heartbeat through');
  say('strict_mode_on', { refusedWith: refused.rpcErrorCode || refused.name });

  const boot = await cli.call('BootNotification', {
    reason: 'PowerUp',
    chargingStation: { model: 'RPC-1', vendorName: 'ocpp-rpc', serialNumber: 'SN-RPC-1', firmwareVersion: '2.2.1' },
  });
  say('booted', { status: boot.status, interval: boot.interval });
  await cli.call('StatusNotification', { timestamp: now(), connectorStatus: 'Available', evseId: 1, connectorId: 1 });
  await cli.call('Heartbeat', {});
  const auth = await cli.call('Authorize', { idToken: { idToken, type: 'ISO14443' } });
  say('authorized', { status: auth.idTokenInfo.status });

  // a full transaction with meter values
  await cli.call('StatusNotification', { timestamp: now(), connectorStatus: 'Occupied', evseId: 1, connectorId: 1 });
  const started = await cli.call('TransactionEvent', txEvent('Started', 'Authorized', now(), {
    idToken: { idToken, type: 'ISO14443' },
  }));
  say('tx_started', { idTokenStatus: started.idTokenInfo && started.idTokenInfo.status });
  energyWh += 500;
  await cli.call('MeterValues', { evseId: 1, meterValue: meterValue(now()) });
  energyWh += 500;
  await cli.call('TransactionEvent', txEvent('Updated', 'MeterValuePeriodic', now()));

  // connection lost: one event is queued while offline and sent after the reconnect
  await cli.close({ code: 1000, reason: 'network lost' });
  energyWh += 500;
  const queued = txEvent('Updated', 'MeterValuePeriodic', now(), { offline: true });
  await new Promise((r) => setTimeout(r, 300));
  cli = newClient();
  await cli.connect();
  say('reconnected');
  await cli.call('TransactionEvent', queued);
  say('offline_event_sent', { seqNo: queued.seqNo });

  // ISO 15118 charging needs: the csms answers and later sends a TxProfile
  const departure = new Date(Date.now() + 4 * 3600 * 1000).toISOString();
  const needs = await cli.call('NotifyEVChargingNeeds', {
    evseId: 1, maxScheduleTuples: 8,
    chargingNeeds: {
      requestedEnergyTransfer: 'AC_three_phase', departureTime: departure,
      acChargingParameters: { energyAmount: 30000, evMinCurrent: 6, evMaxCurrent: 32, evMaxVoltage: 400 },
    },
  });
  say('needs_sent', { status: needs.status });

  await until(() => profiles.some((p) => p.chargingProfile.chargingProfilePurpose === 'TxProfile'),
    'a TxProfile');
  say('profile_received');
  await until(() => stopRequested !== null, 'RequestStopTransaction', 120000);
  energyWh += 250;
  await new Promise((r) => setTimeout(r, 100));
  const ended = await cli.call('TransactionEvent', txEvent('Ended', 'RemoteStop', now()));
  say('tx_ended', { result: ended });
  await cli.call('StatusNotification', { timestamp: now(), connectorStatus: 'Available', evseId: 1, connectorId: 1 });
  await until(() => resetRequested !== null, 'Reset', 120000);
  await new Promise((r) => setTimeout(r, 200));  // the Reset answer is on the wire
  say('reset', { type: resetRequested.type });
  await cli.close({ code: 1000, reason: 'resetting' });
  say('done');
  process.exit(0);
}

main().catch(fail);
