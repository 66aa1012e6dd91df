"""The demo's live progress: a Rich bar on a terminal, a plain line every 10 % otherwise."""

from __future__ import annotations

from datetime import datetime, timedelta
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from evfleet.app.demo.collect import LiveStatus


def status_line(now: datetime, status: LiveStatus) -> str:
    """One line: sim time, stations, sessions, energy, site power against the limit."""
    power = f"{status.site_power_kw:6.1f}/{status.site_limit_kw:.0f} kW"
    if status.site_limit_kw > 0 and status.site_power_kw > status.site_limit_kw + 0.5:
        power = f"[bold red]{power}[/]"
    return (f"sim {now:%a %H:%M} | stations {status.stations_online}/{status.stations_total} | "
            f"sessions {status.sessions_active} ({status.sessions_charging} charging) | "
            f"{status.energy_kwh:7.1f} kWh | site {power}")


class DemoProgress:
    """Progress over the simulated window; call `update` with fresh status as often as you like."""

    def __init__(self, console: Console, start: datetime, duration: timedelta) -> None:
        self._console = console
        self._start = start
        self._total_s = duration.total_seconds()
        self._interactive = console.is_terminal
        self._progress = Progress(
            TextColumn("[bold]simulated day"), BarColumn(bar_width=30),
            TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), TextColumn("{task.fields[line]}"),
            console=console, transient=False, refresh_per_second=4,
        )
        self._task: TaskID | None = None
        self._next_tick = 0.0

    def __enter__(self) -> DemoProgress:
        if self._interactive:
            self._progress.start()
            self._task = self._progress.add_task("demo", total=self._total_s, line="starting...")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._interactive:
            self._progress.stop()

    def update(self, now: datetime, status: LiveStatus) -> None:
        """Show simulated time `now` and `status`."""
        done_s = min(self._total_s, max(0.0, (now - self._start).total_seconds()))
        line = status_line(now, status)
        if self._task is not None:
            self._progress.update(self._task, completed=done_s, line=line)
        elif done_s >= self._next_tick:
            self._console.print(f"{100 * done_s / self._total_s:3.0f}% {line}", highlight=False)
            self._next_tick += self._total_s / 10
