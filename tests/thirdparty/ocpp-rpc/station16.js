// An OCPP 1.6J charge point written with ocpp-rpc in strict mode (requests and responses are
// validated against the OCPP 1.6 schemas on both sides), for the evfleet test suite.
// Usage: node station16.js <csms base url> <station id> <password>
// Prints one JSON line per step on stdout: booted, started, profile, stopped; exits 0 when done.
'use strict';
const { RPCClient } = require('ocpp-rpc');

const [endpoint, identity, password] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const now = () => new Date().toISOString();

async function main() {
    const cli = new RPCClient({ endpoint, identity, password, protocols: ['ocpp1.6'], strictMode: true,
                                reconnect: false });
    let transactionId = null;
    let stopped;
    const done = new Promise((resolve) => { stopped = resolve; });

    cli.handle('GetConfiguration', ({ params }) => {
        const values = {
            SupportedFeatureProfiles: 'Core,SmartCharging,RemoteTrigger',
            ChargingScheduleAllowedChargingRateUnit: 'Current',
            ChargingScheduleMaxPeriods: '5', NumberOfConnectors: '1',
        };
        const wanted = params.key && params.key.length ? params.key : Object.keys(values);
        return {
            configurationKey: wanted.filter((k) => k in values).map((k) => ({ key: k, readonly: true, value: values[k] })),
            unknownKey: wanted.filter((k) => !(k in values)),
        };
    });
    cli.handle('SetChargingProfile', ({ params }) => {
        const p = params.csChargingProfiles;
        if (p.chargingProfilePurpose === 'TxProfile' && p.transactionId !== transactionId) {
            return { status: 'Rejected' };
        }
        say({ event: 'profile', connectorId: params.connectorId, profile: p });
        return { status: 'Accepted' };
    });
    cli.handle('RemoteStopTransaction', ({ params }) => {
        if (params.transactionId !== transactionId) return { status: 'Rejected' };
        setImmediate(async () => {
            try {
                const ts = now();
                await cli.call('StopTransaction', {
                    transactionId, meterStop: 4200, timestamp: ts, reason: 'Remote', idTag: 'RPC-TAG',
                    transactionData: [{ timestamp: ts, sampledValue: [
                        { value: '4200', measurand: 'Energy.Active.Import.Register', unit: 'Wh' }] }],
                });
                await cli.call('StatusNotification', { connectorId: 1, errorCode: 'NoError', status: 'Finishing' });
                say({ event: 'stopped', transactionId });
                stopped();
            } catch (err) {
                say({ event: 'error', error: String(err) });
                process.exit(3);
            }
        });
        return { status: 'Accepted' };
    });

    await cli.connect();
    const boot = await cli.call('BootNotification', { chargePointVendor: 'ocpp-rpc', chargePointModel: 'Strict16' });
    say({ event: 'booted', status: boot.status, protocol: cli.protocol });
    await cli.call('StatusNotification', { connectorId: 1, errorCode: 'NoError', status: 'Available' });
    const auth = await cli.call('Authorize', { idTag: 'RPC-TAG' });
    await cli.call('StatusNotification', { connectorId: 1, errorCode: 'NoError', status: 'Preparing' });
    const start = await cli.call('StartTransaction', { connectorId: 1, idTag: 'RPC-TAG', meterStart: 1000, timestamp: now() });
    transactionId = start.transactionId;
    await cli.call('StatusNotification', { connectorId: 1, errorCode: 'NoError', status: 'Charging' });
    await cli.call('MeterValues', { connectorId: 1, transactionId, meterValue: [{ timestamp: now(), sampledValue: [
        { value: '2500', measurand: 'Energy.Active.Import.Register', unit: 'Wh', context: 'Sample.Periodic' },
        { value: '11000', measurand: 'Power.Active.Import', unit: 'W', context: 'Sample.Periodic' }] }] });
    say({ event: 'started', transactionId, authorize: auth.idTagInfo.status, start: start.idTagInfo.status });
    await done;
    await cli.close({ code: 1000 });
}

main().catch((err) => { say({ event: 'error', error: String(err && err.stack || err) }); process.exit(2); });
