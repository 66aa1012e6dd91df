"""Load harness: N simulated OCPP 2.0.1 stations through HAProxy to M csms nodes (not a test).

    .venv/bin/python benchmarks/load_harness.py --targets bare,1,2 --stations 1000 --interval 1
    .venv/bin/python benchmarks/load_harness.py --targets 2 --stations 5000,10000,20000 --interval 30
    .venv/bin/python benchmarks/load_harness.py --search --targets 2,1,bare --interval 1

`--search` finds, per target, the largest station count it holds (every station connected, all
messages answered, no errors, p99 < `--p99-ms`): doubling from `--search-start`, then bisecting;
`--compare bare,1` runs those targets at the count the first one holds, side by side.

For every target and station count, in one run, one after the other on fresh processes:

- `bare`: the `ocpp` library's own server (benchmarks/load_stations.py; its JSON-schema
  validation, no authentication, no storage): the anchor;
- `M` (a number): M `python -m csms` nodes (API, telemetry and smart charging on, as in
  production) on a private redis-server; with M >= 2 (or `--haproxy`) behind HAProxy with
  deploy/haproxy/haproxy.cfg (its csms-N servers rewritten to the local nodes). One HAProxy
  process holds at most ~9,900 connections here (2 file descriptors each, hard limit 20,000
  per process), so above that `--haproxy-procs` processes share the port (SO_REUSEPORT).

`--clients` client processes (benchmarks/load_stations.py) open the stations (HTTP Basic,
machine-generated passwords) at `--connect-rate` handshakes/s in all, BootNotify, then each
station sends one message every `--interval` seconds for `--duration` seconds, the message mix
of a charger in a session (half TransactionEvents with meter values, a third MeterValues, a
sixth Heartbeats). Reported per run: stations connected, offered and answered msg/s, round
trip p50/p99/max (send to CALLRESULT), errors, CPU microseconds per answered message of the
server processes (all nodes), of redis-server and of HAProxy, and the RSS of each process at
the end of the window (RSS per 1,000 stations is nodes + Redis + HAProxy). The clients share
the machine with the servers: their CPU is printed too. Writes JSON to `--output`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchlib import pct, proc_cpu_s, proc_rss_mb  # noqa: E402
from load_harness_metrics import StreamLagSampler, gc_stats, lease_spread, smart_charging_stats  # noqa: E402
from load_harness_procs import (  # noqa: E402
    HAPROXY_MAX_PER_PROC,
    PASSWORD,
    STATIONS_PY,
    provision,
    start_bare,
    start_haproxy,
    start_nodes,
    start_workers,
)


def drive(url: str, n: int, args: argparse.Namespace, groups: dict[str, list[int]],
          metrics_urls: list[str], worker_urls: list[str] | None = None,
          redis_url: str | None = None) -> dict[str, Any]:
    """Connect N stations with the client processes, run the window, measure `groups` of pids;
    the stream lag is sampled on the nodes' and the workers' (`worker_urls`) /metrics."""
    clients = []
    per = [n // args.clients + (1 if i < n % args.clients else 0) for i in range(args.clients)]
    first = 0
    for count in per:
        proc = subprocess.Popen([sys.executable, STATIONS_PY, "client"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, cwd=str(REPO))
        cfg = {"url": url, "sids": [f"L{i:05d}" for i in range(first, first + count)], "password": PASSWORD,
               "connect_rate": args.connect_rate / args.clients, "connect_tries": 20,
               "interval_s": args.interval, "duration_s": args.duration, "answer_timeout_s": 30.0,
               "mix": args.mix.split(","), "tx_events": args.tx_events, "warmup_s": args.warmup,
               "ignore_limits": args.ignore_limits, "boot_status": not args.no_boot_status,
               "trace": f"{args.trace}.{len(clients)}" if args.trace else None,
               "trace_sids": args.trace_station}
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(cfg) + "\n")
        proc.stdin.flush()
        clients.append(proc)
        first += count
    started = time.time()
    ready, failures = 0, []
    for proc in clients:
        assert proc.stdout is not None
        status = json.loads(proc.stdout.readline())
        ready += status["ready"]
        failures += status["connect_failures"]
    connect_s = time.time() - started
    print(f"  {ready}/{n} connected and booted in {connect_s:.0f} s", flush=True)
    time.sleep(args.settle)
    waited_s: float | None = None
    if metrics_urls and args.defaults_wait and not args.no_boot_status:
        waited_s, sent = wait_for_defaults(metrics_urls, ready, args.defaults_wait)
        print(f"  {sent:.0f} default profiles sent, {waited_s:.0f} s after the settle", flush=True)
    t0 = time.time() + 1.0 + args.warmup  # the stations start sending `warmup` s before the window
    for proc in clients:
        assert proc.stdin is not None
        proc.stdin.write(f"{t0}\n")
        proc.stdin.flush()
    groups = {**groups, "clients": [c.pid for c in clients]}
    time.sleep(max(0.0, t0 - time.time()))
    spies = []
    # every node (the one holding a site's smart-charging lease differs); --nonblocking: py-spy's
    # default stops the process for each of the 200 samples a second, which slowed the nodes it measured
    if args.py_spy is not None:
        args.py_spy.mkdir(parents=True, exist_ok=True)
        for pid in [*groups.get("server", []), *groups.get("optimizer", [])]:
            spies.append(subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "-p",
                                           str(pid), "-d", str(int(args.duration)), "-r", "200", "-f", "raw",
                                           "--nonblocking", "-o", str(args.py_spy / f"{pid}.txt")],
                                          stdout=subprocess.DEVNULL))
    # the stream lag of every consumer, sampled through the window (nodes, then workers); started
    # first: a busy node may take most of the window to answer gc_stats' full scrape
    with StreamLagSampler([*metrics_urls, *(worker_urls or [])], args.lag_every) as lag_sampler:
        each0 = {p: proc_cpu_s(p) for pids in groups.values() for p in pids}
        gc0, sc0 = gc_stats(metrics_urls), smart_charging_stats(metrics_urls)
        time.sleep(max(0.0, t0 + args.duration - time.time()))
    cpu_each = {g: [proc_cpu_s(p) - each0.get(p, 0.0) for p in pids] for g, pids in groups.items()}
    cpu = {g: sum(v) for g, v in cpu_each.items()}
    gc1, sc1 = gc_stats(metrics_urls), smart_charging_stats(metrics_urls)
    rss = {g: [round(proc_rss_mb(p), 1) for p in pids] for g, pids in groups.items()}
    spread = lease_spread(redis_url, [f"L{i:05d}" for i in range(n)]) if redis_url else {}
    for spy in spies:
        spy.wait(60)
    lat: list[float] = []
    stats: dict[str, int] = {}
    loops: list[dict[str, Any]] = []
    for proc in clients:
        # the end-of-window figures are read: now the stations may close (load_stations.client_main)
        out = json.loads(proc.communicate(input="close\n", timeout=args.duration + 120)[0])
        lat += out["latencies"]
        loops.append(out.get("loop") or {})
        for k, v in out["stats"].items():
            stats[k] = stats.get(k, 0) + v
    answered = len(lat)
    row: dict[str, Any] = {
        "stations": n, "connected": ready, "connect_s": round(connect_s, 1),
        "defaults_wait_s": None if waited_s is None else round(waited_s, 1),
        "window_utc": [time.strftime("%H:%M:%S", time.gmtime(t)) for t in (t0, t0 + args.duration)],
        "connect_failures": failures[:3],
        "offered_msg_s": round(ready / args.interval, 1),
        "answered_msg_s": round(answered / args.duration, 1),
        "p50_ms": pct(lat, 0.5) * 1000, "p99_ms": pct(lat, 0.99) * 1000,
        "max_ms": max(lat) * 1000 if lat else float("nan"),
        "errors": {k: v for k, v in stats.items() if k.startswith("error:") or k == "closed"},
        "refused_handshakes": stats.get("refused", 0), "csms_calls": stats.get("csms_calls", 0),
        "csms_calls_in_window": {k.split(":", 1)[1]: v for k, v in sorted(stats.items())
                                 if k.startswith("window_call:")},
        "smart_charging_in_window": {k: v - sc0.get(k, 0.0) for k, v in sc1.items()},
        "smart_charging_since_start": sc1,
        "cpu_us_per_msg": {g: round(c / answered * 1e6) if answered else None for g, c in cpu.items()},
        "cpu_share": {g: round(c / args.duration, 2) for g, c in cpu.items()},
        "cpu_us_per_msg_each": {g: [round(c / answered * 1e6) if answered else None for c in v]
                                for g, v in cpu_each.items()},
        "rss_mb": rss, "gc_gen2_in_window": gc1["gen2_collections"] - gc0["gen2_collections"],
        "gc_gen2_ms_in_window": round((gc1["gen2_seconds"] - gc0["gen2_seconds"]) * 1000, 1),
        "gc_gen2_max_ms_since_start": round(gc1["gen2_max_ms"], 1),
        "gc_gen0_gen1_in_window": gc1["young_collections"] - gc0["young_collections"],
        "gc_gen0_gen1_ms_in_window": round((gc1["young_seconds"] - gc0["young_seconds"]) * 1000, 1),
        "gc_gen0_gen1_max_ms_since_start": [round(gc1["gen0_max_ms"], 1), round(gc1["gen1_max_ms"], 1)],
        "gc_gen0_gen1_cpu_ms_in_window":
            round((gc1["young_cpu_seconds"] - gc0["young_cpu_seconds"]) * 1000, 1),
        "gc_stalls_10ms_cpu_in_window": gc1["gc_stalls"] - gc0["gc_stalls"],
        "gc_thaws_in_window": {k.split(":", 1)[1]: v - gc0.get(k, 0.0) for k, v in gc1.items()
                               if k.startswith("thaws:") and v - gc0.get(k, 0.0)},
        "slow_callbacks_in_window": gc1["slow_callbacks"] - gc0["slow_callbacks"],
        "slow_turns_in_window": gc1["slow_turns"] - gc0["slow_turns"],
        "stream_lag_in_window": lag_sampler.summary(),
        "smart_charging_leases_at_end": spread,
        "client_loops_in_window": loops,
    }
    servers = sum(sum(rss.get(g, [])) for g in ("server", "redis", "haproxy", "optimizer"))
    row["rss_mb_servers"] = round(servers, 1)
    row["rss_mb_per_1000"] = round(servers / ready * 1000, 1) if ready else None
    return row


def wait_for_defaults(metrics_urls: list[str], stations: int, max_s: float) -> tuple[float, float]:
    """Wait (at most `max_s`) until the nodes sent a TxDefaultProfile to every booted station: the
    warm-up (the stations' first sessions) then starts on a site task that is not still sending
    the boot wave's defaults. The seconds waited and the defaults sent."""
    started = time.monotonic()
    sent = 0.0
    while time.monotonic() - started < max_s:
        stats = smart_charging_stats(metrics_urls)
        sent = sum(v for k, v in stats.items()
                   if k.startswith("smart_charging_profiles_sent") and "default" in k)
        if sent >= stations:
            break
        time.sleep(1.0)
    return time.monotonic() - started, sent


def run_target(target: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """One target at one station count, on fresh processes."""
    from csms.store.embedded import EmbeddedRedis

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="evfleet-load-") as tmpdir:
        tmp = Path(tmpdir)
        worker_urls: list[str] = []  # the optimizer workers' /metrics (stream lag only)
        if args.logs is not None:  # kept: node and HAProxy logs of each run
            tmp = args.logs / f"{target}-{n}"
            tmp.mkdir(parents=True, exist_ok=True)
        redis_url: str | None = None
        if target == "bare":
            url, pid = start_bare(stack, tmp)
            groups, metrics_urls = {"server": [pid]}, []
        else:
            m = int(target)
            redis_srv = EmbeddedRedis().start()
            stack.callback(redis_srv.stop)
            provision(redis_srv.url, n, args.site_size)
            redis_url = redis_srv.url
            nodes = start_nodes(stack, m, args, tmp, redis_srv.url)
            groups = {"server": [nd.proc.pid for nd in nodes],
                      "redis": [redis_srv._proc.pid if redis_srv._proc else 0]}
            metrics_urls = [f"http://127.0.0.1:{nd.api_port}/metrics" for nd in nodes]
            if args.optimizer:
                groups["optimizer"] = start_workers(stack, args.optimizer, tmp, redis_srv.url,
                                                    args.optimizer_log_level, worker_urls)
            if m >= 2 or args.haproxy:
                procs = args.haproxy_procs or max(1, -(-n // HAPROXY_MAX_PER_PROC))
                url, groups["haproxy"] = start_haproxy(stack, nodes, procs, tmp)
            else:
                url = f"ws://127.0.0.1:{nodes[0].ocpp_port}/ocpp/"
        name = target if target == "bare" else f"{target} node{'s' if target != '1' else ''}" + (
            " + HAProxy" if "haproxy" in groups else "")
        print(f"{name}: {n} stations, one message per {args.interval:g} s each", flush=True)
        row = drive(url, n, args, groups, metrics_urls, worker_urls, redis_url)
        row["target"] = name
        if row["smart_charging_leases_at_end"]:
            answers = {k: v for k, v in row["smart_charging_in_window"].items() if "answers" in k}
            print(f"  {name} {n}: smart-charging leases at the end: {row['smart_charging_leases_at_end']}; "
                  f"SetChargingProfile answers in the window: {answers}", flush=True)
        return row


def holds(row: dict[str, Any], p99_ms: float) -> bool:
    """A run the target held: every station connected, no errors, all offered messages answered
    (within 1 %) and p99 below `p99_ms`."""
    return (row["connected"] == row["stations"] and not sum(row["errors"].values()) and row["p99_ms"] < p99_ms
            and row["answered_msg_s"] >= 0.99 * row["offered_msg_s"])


def search(target: str, args: argparse.Namespace, rows: list[dict[str, Any]]) -> int:
    """The largest station count `target` holds (`holds`): from `--search-start`, doubling while
    it holds (up to `--search-max`) or halving while it does not (down to 5), then bisecting until
    the bracket is within `--search-step` or `--search-tol` of it. Every run is appended to `rows`;
    returns the count (0: not even 5)."""
    lo, hi, n = 0, None, args.search_start
    while True:
        row = run_target(target, n, args)
        row["holds"] = holds(row, args.p99_ms)
        rows.append(row)
        print_table(rows[-1:])
        print(f"  -> {'held' if row['holds'] else 'not held'} (p99 < {args.p99_ms:g} ms, all answered)",
              flush=True)
        if row["holds"]:
            lo = n
        else:
            hi = n
        if hi is None:
            if n >= args.search_max:
                return lo
            n = min(2 * n, args.search_max)
            continue
        if lo == 0:  # not even the start: halve (down to 5 stations)
            if n // 2 < 5:
                return 0
            n //= 2
            continue
        if hi - lo <= max(args.search_step, args.search_tol * lo):
            return lo
        n = lo + max(args.search_step, (hi - lo) // 2 // args.search_step * args.search_step)
        if n >= hi:
            return lo


def print_table(rows: list[dict[str, Any]]) -> None:
    """The runs side by side."""
    print(f"\n{'target':<22}{'stations':>9}{'conn':>7}{'offer/s':>9}{'msg/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'max ms':>8}{'err':>6}{'srv us':>8}{'redis us':>9}{'hap us':>7}{'cli us':>7}{'RSS MB':>8}"
          f"{'MB/1k':>7}{'gc2':>5}{'gc2 ms':>8}")
    for r in rows:
        us = r["cpu_us_per_msg"]
        print(f"{r['target']:<22}{r['stations']:>9}{r['connected']:>7}{r['offered_msg_s']:>9.0f}"
              f"{r['answered_msg_s']:>8.0f}{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}{r['max_ms']:>8.0f}"
              f"{sum(r['errors'].values()):>6}{us.get('server') or 0:>8}{us.get('redis') or 0:>9}"
              f"{us.get('haproxy') or 0:>7}{us.get('clients') or 0:>7}{r['rss_mb_servers']:>8.0f}"
              f"{r['rss_mb_per_1000'] or 0:>7.1f}{r['gc_gen2_in_window']:>5.0f}"
              f"{r['gc_gen2_ms_in_window']:>8.0f}")
    for r in rows:
        for consumer, lag in (r.get("stream_lag_in_window") or {}).items():
            if "max_s" in lag:  # (the "scrapes" entry counts the sampler's rounds and failures)
                print(f"  {r['target']} {r['stations']}: stream lag of {consumer}: max {lag['max_s']:.1f} s, "
                      f"median {lag['median_s']:.1f} s ({lag['samples']} samples; max of each node, then "
                      f"worker: {lag['max_s_each']})")
    for r in rows:
        loops = [lp for lp in r.get("client_loops_in_window") or [] if lp]
        if loops:
            print(f"  {r['target']} {r['stations']}: client loops in the window (what a client adds to the "
                  f"round trips it measures): lag max {[lp['lag_max_ms'] for lp in loops]} ms, p99 "
                  f"{[lp['lag_p99_ms'] for lp in loops]} ms, samples > 50 ms "
                  f"{sum(lp['lags_over_50ms'] for lp in loops)} of {sum(lp['samples'] for lp in loops)}; "
                  f"collections {sum(lp['gcs'] for lp in loops)}, "
                  f"{sum(lp['gc_ms'] for lp in loops):.0f} ms in "
                  f"all, longest {max(lp['gc_max_ms'] for lp in loops):.0f} ms")
    print("(us: CPU microseconds per answered message of all server processes / redis-server / HAProxy /"
          " the client processes; RSS MB: servers + Redis + HAProxy at the end of the window; gc2: full"
          " garbage collections in the window, all nodes, and the ms they took)")


def main() -> None:
    """Run the harness (see module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default="bare,1,2", help="comma-separated: bare and/or node counts")
    p.add_argument("--stations", default="1000", help="comma-separated station counts")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between a station's messages")
    p.add_argument("--duration", type=float, default=30.0, help="measured window, seconds")
    p.add_argument("--settle", type=float, default=5.0, help="seconds between connect and the window")
    p.add_argument("--defaults-wait", type=float, default=180.0,
                   help="after the settle, wait at most this long until the nodes sent every booted station "
                        "its TxDefaultProfile before the warm-up starts (0: do not wait): in 3 of 4 "
                        "20,000-station runs the lease holder was still behind the boot wave when the "
                        "stations' first sessions started, and their start-up passes fell in the window")
    p.add_argument("--warmup", type=float, default=0.0,
                   help="seconds the stations send before the window (not measured): with --interval 30 "
                        "the first transaction of every station starts then, not in the window")
    p.add_argument("--clients", type=int, default=4, help="client processes")
    p.add_argument("--connect-rate", type=float, default=400.0, help="handshakes per second, all clients")
    p.add_argument("--mix", default="TransactionEvent,MeterValues,TransactionEvent,Heartbeat,"
                                    "TransactionEvent,MeterValues", help="a station's message cycle")
    p.add_argument("--tx-events", type=int, default=40, help="TransactionEvents per transaction")
    p.add_argument("--site-size", type=int, default=0,
                   help="stations per site (0: all on the default site, one site of N stations; without an "
                        "optimizer every pass of its fallback sharing reads all N EVSEs)")
    p.add_argument("--no-boot-status", action="store_true",
                   help="stations send no StatusNotification after BootNotification (the harness before 7 "
                        "December 07:00 UTC: each EVSE is first seen when its first session starts, draws "
                        "unlimited until its interim share arrives); by default each reports its connector "
                        "Available once accepted, as a real charger does")
    p.add_argument("--ignore-limits", action="store_true",
                   help="stations meter 7.2 kW whatever profile they accepted (the behaviour before this "
                        "option: every station is marked non-compliant and the site re-shared on every "
                        "watchdog pass, the worst case); by default a station obeys the profiles it "
                        "accepts, as a real charger does")
    p.add_argument("--optimizer", type=int, default=0, metavar="N",
                   help="start N `evfleet optimizer` workers on the run's Redis (as production runs them: "
                        "plans arrive and sites leave fallback mode); their CPU and RSS are reported "
                        "(group 'optimizer', counted in RSS MB)")
    p.add_argument("--haproxy", action="store_true", help="HAProxy in front of a single node too")
    p.add_argument("--haproxy-procs", type=int, default=0, help="HAProxy processes (0: enough for N)")
    p.add_argument("--max-per-node", type=int, default=15_000, help="ocpp_max_connections of a node")
    p.add_argument("--node-env", action="append", default=[], metavar="K=V",
                   help="extra environment of the csms nodes (e.g. EVFLEET_GC_FREEZE=false)")
    p.add_argument("--optimizer-log-level", default="WARNING", metavar="LEVEL",
                   help="log level of the optimizer workers (INFO logs every plan; with --logs)")
    p.add_argument("--logs", type=Path, default=None, metavar="DIR",
                   help="keep the node and HAProxy logs of each run in DIR/TARGET-N")
    p.add_argument("--trace", type=Path, default=None, metavar="FILE",
                   help="trace the stations' profiles and readings (JSON lines, FILE.0, FILE.1, ... one per "
                        "client; load_stations.py); all stations unless --trace-station")
    p.add_argument("--trace-station", action="append", default=[], metavar="SID",
                   help="with --trace: trace only this station (repeatable)")
    p.add_argument("--lag-every", type=float, default=2.0, metavar="S",
                   help="sample the nodes' evfleet_stream_lag_seconds every S seconds in the window")
    p.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                   help="record every server process with py-spy (collapsed stacks) into DIR/PID.txt")
    p.add_argument("--search", action="store_true",
                   help="find the largest station count each target holds (p99 < --p99-ms, every station "
                        "connected, all answered, no errors) instead of running --stations")
    p.add_argument("--search-start", type=int, default=100, help="first count of --search")
    p.add_argument("--search-max", type=int, default=40_000, help="highest count --search tries")
    p.add_argument("--search-step", type=int, default=50, help="--search stops at this bracket")
    p.add_argument("--search-tol", type=float, default=0.1, help="... or this fraction of the count held")
    p.add_argument("--compare", default="", help="with --search: these targets (e.g. bare,1) are also run "
                                                 "at the count the first target holds, side by side")
    p.add_argument("--p99-ms", type=float, default=100.0, help="the p99 a run must stay under (--search)")
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/load_harness.json"))
    args = p.parse_args()
    rows: list[dict[str, Any]] = []
    found: dict[str, int] = {}
    load_before = os.getloadavg()
    if args.search:
        targets = [t.strip() for t in args.targets.split(",")]
        for target in targets:
            found[target] = search(target, args, rows)
            print(f"largest count held by {target}: {found[target]}", flush=True)
        at = found[targets[0]]
        for target in (t.strip() for t in args.compare.split(",") if t.strip()):
            if at:
                rows.append(run_target(target, at, args))
                rows[-1]["holds"] = holds(rows[-1], args.p99_ms)
                print_table(rows[-1:])
    else:
        for n in (int(s) for s in args.stations.split(",")):
            for target in args.targets.split(","):
                rows.append(run_target(target.strip(), n, args))
                print_table(rows[-1:])
    print_table(rows)
    for target, count in found.items():
        print(f"largest station count held (p99 < {args.p99_ms:g} ms, all answered, no errors): "
              f"{target}: {count} at one message per {args.interval:g} s each")
    load = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f}, after: {load[0]:.2f} (1 min) {load[1]:.2f} (5 min) "
          f"on {os.cpu_count()} cpus; clients share the machine")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
        "load_before_1m": load_before[0], "load_after_1m_5m": load[:2], "interval_s": args.interval,
        "duration_s": args.duration, "warmup_s": args.warmup, "clients": args.clients, "mix": args.mix,
        "site_size": args.site_size, "ignore_limits": args.ignore_limits, "optimizer_workers": args.optimizer,
        "boot_status": not args.no_boot_status,
        "node_env": args.node_env,
        "command": " ".join(sys.argv), "largest_held": found, "p99_ms_bound": args.p99_ms,
        "runs": rows}, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
