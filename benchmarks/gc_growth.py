"""Benchmark: what fills a node's young generation per message: kept objects or cyclic garbage (not a test).

    .venv/bin/python benchmarks/gc_growth.py --stations 500 --interval 2 --window 20
    .venv/bin/python benchmarks/gc_growth.py --trace 6      # + allocating lines (tracemalloc, slower)

A young (generation-0) collection runs when the net count of new container objects (allocations less
deallocations) passes the threshold (50,000 on a node; issue 14). This runs one csms node in this
process exactly as `evfleet csms` runs it (`run_csms`: API, telemetry and smart charging, the gc
thresholds, the start-up freeze and the refreezer) on a private Redis, with `--stations` provisioned
stations (one site, as the load harness; `--site-size` for smaller sites) driven by one
benchmarks/load_stations.py client process (the harness's realistic mix, one message every
`--interval` s per station). After `--warmup` s of traffic it collects, freezes everything alive and
turns the collector off for `--window` s, then reports per 1,000 messages answered:

- `net`: the collector's generation-0 count (what triggers young collections);
- `kept`: new objects still alive at the end (the objects in no generation but the young ones), by
  type (`csms.gccensus.label`) and, with `--trace N` (tracemalloc, N frames), by allocating line;
- `cyclic`: objects a full collection then frees (reference cycles only the collector frees), the same.

The node's CPU seconds in the window (process time: includes this process's bookkeeping only
outside the window) are printed too. Writes JSON to `--output`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time
import tracemalloc
from collections import Counter as Tally
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from load_harness_procs import PASSWORD, STATIONS_PY, provision  # noqa: E402

TOP = 25


def _repo_path(path: str) -> str:
    """A source path relative to the repository (or to site-packages)."""
    return path.replace(str(REPO) + "/", "").split("site-packages/")[-1]


def _sites(objs: list[Any]) -> list[tuple[str, int]]:
    """Allocating lines (innermost first, 3 frames, repository-relative) of `objs`, counted."""
    from csms.gccensus import allocation_sites

    return allocation_sites(objs, TOP, _repo_path)


def _answered() -> float:
    from csms import metrics

    return sum(s.value for m in metrics.OCPP_MESSAGES.collect() for s in m.samples
               if s.name.endswith("_total"))


async def _window(args: argparse.Namespace) -> dict[str, Any]:
    """Freeze, turn the collector off for the window, then count what is new and what is cyclic."""
    from csms.gccensus import label

    gc.collect()
    gc.freeze()
    gc.disable()
    if args.trace:
        tracemalloc.start(args.trace)
    answered0, cpu0 = _answered(), time.process_time()
    count0 = gc.get_count()[0]
    await asyncio.sleep(args.window)
    net = gc.get_count()[0] - count0
    cpu = time.process_time() - cpu0
    answered = _answered() - answered0
    kept = gc.get_objects()
    kept_types = Tally(map(label, kept)).most_common(TOP)
    kept_sites = _sites(kept) if args.trace else []
    n_kept = len(kept)
    del kept
    gc.set_debug(gc.DEBUG_SAVEALL)
    cyclic_n = gc.collect()
    gc.set_debug(0)
    garbage = list(gc.garbage)
    gc.garbage.clear()
    cyclic_types = Tally(map(label, garbage)).most_common(TOP)
    cyclic_sites = _sites(garbage) if args.trace else []
    del garbage
    gc.collect()
    if args.trace:
        tracemalloc.stop()
    gc.unfreeze()
    gc.enable()
    per_k = 1000 / max(answered, 1)
    return {"answered": answered, "window_s": args.window, "cpu_s": round(cpu, 3),
            "cpu_us_per_msg": round(cpu * 1e6 / max(answered, 1)), "net": net,
            "net_per_1000_msgs": round(net * per_k), "kept": n_kept,
            "kept_per_1000_msgs": round(n_kept * per_k),
            "cyclic": cyclic_n, "cyclic_per_1000_msgs": round(cyclic_n * per_k),
            "kept_types": kept_types, "kept_sites": kept_sites, "cyclic_types": cyclic_types,
            "cyclic_sites": cyclic_sites}


async def _main(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    from csms.app import run_csms
    from csms.settings import CsmsSettings
    from csms.store.embedded import free_port

    port = free_port()
    settings = CsmsSettings(redis_url=redis_url, host="127.0.0.1", port=port, api_port=free_port(),
                            node_id="node-1", api_auth=False, log_level="WARNING",
                            **dict(kv.split("=", 1) for kv in args.set))
    stop = asyncio.Event()
    node = asyncio.create_task(run_csms(settings, None, stop))
    await asyncio.sleep(3.0)
    client = await asyncio.create_subprocess_exec(
        sys.executable, STATIONS_PY, "client", stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(REPO))
    assert client.stdin is not None and client.stdout is not None
    cfg = {"url": f"ws://127.0.0.1:{port}/ocpp/", "sids": [f"L{i:05d}" for i in range(args.stations)],
           "password": PASSWORD, "connect_rate": 200.0, "connect_tries": 20, "interval_s": args.interval,
           "duration_s": args.warmup + args.window + 5, "answer_timeout_s": 30.0,
           "mix": args.mix.split(","), "tx_events": 40, "warmup_s": 0.0, "ignore_limits": False,
           "boot_status": True, "trace": None, "trace_sids": []}
    client.stdin.write((json.dumps(cfg) + "\n").encode())
    await client.stdin.drain()
    ready = json.loads(await client.stdout.readline())
    print(f"{ready['ready']} stations connected; {args.warmup:g} s of warm-up, then the window", flush=True)
    client.stdin.write(f"{time.time()}\n".encode())
    await client.stdin.drain()
    await asyncio.sleep(args.warmup)
    out = {"stations": args.stations, "ready": ready["ready"], "interval_s": args.interval,
           **await _window(args)}
    print("window done", flush=True)
    client.stdin.write(b"close\n")
    await client.stdin.drain()
    client.kill()
    await client.wait()
    stop.set()
    await asyncio.wait_for(node, 30)
    return out


def main() -> None:
    """Run the benchmark (see module docstring)."""
    from csms.runtime import event_loop_kind, new_event_loop
    from csms.store.embedded import EmbeddedRedis

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stations", type=int, default=500)
    p.add_argument("--site-size", type=int, default=0, help="stations per site (0: one site)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between a station's messages")
    p.add_argument("--warmup", type=float, default=20.0, help="seconds of traffic before the window")
    p.add_argument("--window", type=float, default=20.0, help="seconds with the collector off")
    p.add_argument("--mix", default="TransactionEvent,MeterValues,TransactionEvent,Heartbeat,"
                                     "TransactionEvent,MeterValues")
    p.add_argument("--trace", type=int, default=0, metavar="N", help="tracemalloc frames (0: off)")
    p.add_argument("--set", action="append", default=[], metavar="K=V", help="a CsmsSettings field")
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/gc_growth.json"))
    args = p.parse_args()
    redis_srv = EmbeddedRedis().start()
    try:
        provision(redis_srv.url, args.stations, args.site_size)
        with asyncio.Runner(loop_factory=new_event_loop(event_loop_kind("auto", 0))) as runner:
            out = runner.run(_main(args, redis_srv.url))
    finally:
        redis_srv.stop()
    out["command"] = " ".join(["benchmarks/gc_growth.py", *sys.argv[1:]])
    out["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for key in ("answered", "cpu_us_per_msg", "net_per_1000_msgs", "kept_per_1000_msgs",
                "cyclic_per_1000_msgs"):
        print(f"{key}: {out[key]}")
    for key in ("kept_types", "kept_sites", "cyclic_types", "cyclic_sites"):
        if out[key]:
            print(f"{key}:")
            for name, n in out[key]:
                print(f"  {n:>8}  {name}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
