"""Where the csms nodes' event loops stalled in a load_harness window, by source (not a benchmark).

    .venv/bin/python benchmarks/loop_stalls.py RUN_DIR/2-20000 RUN.json

Reads the node logs a harness run kept (`--node-env EVFLEET_SLOW_CALLBACK_MS=50 --logs RUN_DIR`)
and the window of its JSON (`window_utc`), and prints per node, for the records inside the window:

- slow callbacks (`csms.loopwatch`: one callback over the threshold), by source: the innermost
  frame of the project's code in the stack sampled while it ran (else the task's coroutine), with
  their count, wall ms and CPU ms, and the CPU of the garbage collections logged inside them
  (`csms.runtime` "gc: generation N collection took", ending within the callback): what is left,
  "own CPU", is the stall's non-GC part;
- busy loop turns, by the name that used most of their CPU;
- garbage collections logged (count, wall, CPU);
- the smart-charging start-up events logged in the window (over-limit alarm, optimizer taken as
  silent, sessions without a plan): each is followed by a whole-site pass on the lease holder, and
  whether they fall inside or before the window changes a run's tail.

A callback with far less CPU than wall time was pre-empted by other processes (a loaded machine),
not slow in itself.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) (\S+) \[[^\]]*\] (.*)")
BLOCKED = re.compile(r"event loop blocked (\d+) ms \((\d+) ms CPU\) by (.*)")
TURN = re.compile(r"event loop turn busy (\d+) ms \((\d+) ms CPU\), (\d+) callbacks; most CPU: (.*)")
GC = re.compile(r"gc: generation (\d) collection took ([\d.]+) ms \(([\d.]+) ms CPU\)")
STARTUP = {"over-limit alarm": re.compile(r"above the limit .* for more than"),
           "optimizer silent": re.compile(r"the optimizer is taken as silent"),
           "no plan": re.compile(r"no plan for \d+ session")}


def records(path: Path) -> Iterator[tuple[float, str, list[str]]]:
    """(epoch s, message, continuation lines) of each log record."""
    current: tuple[float, str, list[str]] | None = None
    with path.open(errors="replace") as lines:
        for line in lines:
            m = RECORD.match(line)
            if m:
                if current:
                    yield current
                at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                current = (at, m.group(4), [])
            elif current:
                current[2].append(line.rstrip("\n"))
    if current:
        yield current


def source(what: str, stack: list[str]) -> str:
    """The innermost project frame of `stack` (file:function), else the task's coroutine."""
    frames = [ln for ln in stack if ln.strip().startswith("File ")]
    own = [ln for ln in frames if "/csms/" in ln or "/evfleet/" in ln]
    pick = own[-1] if own else (frames[-1] if frames else "")
    m = re.search(r'File "([^"]+)", line \d+, in (\S+)', pick)
    if m and "loopwatch.py" not in m.group(1):
        return f"{'/'.join(m.group(1).split('/')[-2:])}:{m.group(2)}"
    task = re.search(r"name='([^']+)' coro=<(\S+?)\(", what)
    if task:
        return f"task {task.group(1).rstrip('0123456789')} {task.group(2)}"
    return what[:80]


def node_stalls(path: Path, start: float, end: float) -> dict[str, Any]:
    """The slow callbacks, busy turns and collections of one node log inside [start, end)."""
    cbs: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    turns: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    gcs: list[tuple[float, float, float]] = []  # (end epoch s, wall ms, CPU ms)
    blocked: list[tuple[float, int, int, str]] = []
    events: dict[str, int] = defaultdict(int)
    for at, msg, stack in records(path):
        if not start <= at < end:
            continue
        for name, pattern in STARTUP.items():
            if pattern.search(msg):
                events[name] += 1
        if m := GC.match(msg):
            gcs.append((at, float(m.group(2)), float(m.group(3))))
        elif m := BLOCKED.match(msg):
            blocked.append((at, int(m.group(1)), int(m.group(2)), source(m.group(3), stack)))
        elif m := TURN.match(msg):
            top = re.sub(r" [\d.]+ ms/\d+$", "", m.group(4).split(", ")[0])
            t = turns[top]
            t[0] += 1
            t[1] += int(m.group(1))
            t[2] += int(m.group(2))
    for at, wall, cpu, src in blocked:
        in_gc = sum(g[2] for g in gcs if at - wall / 1000 - 0.005 <= g[0] <= at + 0.005)
        c = cbs[src]
        c[0] += 1
        c[1] += wall
        c[2] += cpu
        c[3] += min(in_gc, cpu)
    return {"callbacks": dict(cbs), "turns": dict(turns), "events": dict(events),
            "gc": [len(gcs), sum(g[1] for g in gcs), sum(g[2] for g in gcs)]}


def main() -> None:
    """Parse the arguments, print each node's stalls in the window."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", type=Path, help="a run's log directory (DIR/TARGET-N)")
    p.add_argument("result", type=Path, help="the run's JSON (--output)")
    args = p.parse_args()
    run = json.loads(args.result.read_text())["runs"][0]
    day = datetime.fromisoformat(json.loads(args.result.read_text())["measured_at"].replace("Z", "+00:00"))
    start, end = (datetime.strptime(f"{day:%Y-%m-%d} {t}", "%Y-%m-%d %H:%M:%S").timestamp()
                  for t in run["window_utc"])
    print(f"window {run['window_utc'][0]}-{run['window_utc'][1]} UTC")
    for log in sorted(args.logs.glob("node-*.log")):
        s = node_stalls(log, start, end)
        cbs = s["callbacks"]
        print(f"== {log.name}: {sum(c[0] for c in cbs.values())} slow callbacks, "
              f"{sum(c[1] for c in cbs.values()):.0f} ms wall, {sum(c[2] for c in cbs.values()):.0f} ms CPU "
              f"({sum(c[3] for c in cbs.values()):.0f} of it in collections); "
              f"{sum(t[0] for t in s['turns'].values())} busy turns; collections logged "
              f"{s['gc'][0]} ({s['gc'][1]:.0f} ms wall, {s['gc'][2]:.0f} ms CPU); start-up events "
              f"{s['events'] or 'none'}")
        for src, (n, wall, cpu, in_gc) in sorted(cbs.items(), key=lambda kv: -(kv[1][2] - kv[1][3])):
            print(f"  callbacks {n:3d} {wall:6.0f} ms wall {cpu:5.0f} ms CPU, own CPU {cpu - in_gc:5.0f} ms"
                  f"  {src}")
        for top, (n, wall, cpu) in sorted(s["turns"].items(), key=lambda kv: -kv[1][2])[:8]:
            print(f"  turns     {n:3d} {wall:6.0f} ms wall {cpu:5.0f} ms CPU, most CPU: {top}")


if __name__ == "__main__":
    main()
