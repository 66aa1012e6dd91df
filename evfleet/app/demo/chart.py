"""report.png: site load against the limit for both runs, with the price on a twin axis."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from evfleet.app.demo.report import PriceSeries, RunMetrics


def chart_title(title: str, cars: int, saving_percent: float | None, start: datetime, end: datetime) -> str:
    """The chart's heading: the saving the report claims, or "not measured" when it claims none
    (`summary.saving_percent` null: a session's end never reached the csms)."""
    saving = "saving not measured" if saving_percent is None else f"saving {saving_percent:.1f} %"
    return f"{title}: {cars} cars, {saving} ({start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC)"


def render_chart(optimized: RunMetrics, uncontrolled: RunMetrics, prices: PriceSeries, path: Path,
                 *, saving_percent: float | None, title: str = "evfleet demo") -> Path:
    """Draw both runs' site load, the site limit and the price series into a PNG at `path`;
    the heading shows `saving_percent` (the report's claimed saving, None: not measured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.2), dpi=110)
    try:
        for run, colour, label in (
            (uncontrolled, "#d62728", "uncontrolled (same cars, replayed)"),
            (optimized, "#1f77b4", f"optimized ({optimized.strategy}, measured)"),
        ):
            times = run.load.times() + [run.load.end]
            values = list(run.load.load_kw) + [run.load.load_kw[-1]]
            ax.step(mdates.date2num(times), values, where="post", color=colour, linewidth=1.6,
                    label=f"{label}: {run.energy_cost:,.2f} {run.currency} for "
                          f"{run.energy_delivered_kwh:,.0f} kWh, peak {run.peak_kw:,.0f} kW, "
                          f"{len(run.cars_short)} cars short")
        start, end = optimized.load.start, optimized.load.end
        x0, x1 = float(mdates.date2num(start)), float(mdates.date2num(end))
        ax.hlines(optimized.site_limit_kw, x0, x1, colors="black", linestyles="--", linewidth=1.2,
                  label=f"site limit {optimized.site_limit_kw:,.0f} kW")
        ax.set_ylabel("site load (kW)")
        ax.set_ylim(0, max(optimized.site_limit_kw, uncontrolled.max_site_load_kw,
                           optimized.max_site_load_kw) * 1.5)
        ax.set_xlim(x0, x1)
        ax.grid(True, alpha=0.3)

        price_ax = ax.twinx()
        p_times = []
        t = start
        step = timedelta(minutes=prices.step_minutes)
        while t <= end:
            p_times.append(t)
            t += step
        p_values = [prices.price_at(pt) for pt in p_times]
        price_ax.step(mdates.date2num(p_times), p_values, where="post", color="#2ca02c", alpha=0.6,
                      linewidth=1.2, label="import price")
        price_ax.set_ylabel(f"price ({prices.currency}/kWh)")
        price_ax.set_ylim(0, max(p_values) * 1.6)

        hours = max(1, round((end - start).total_seconds() / 3600 / 8))
        ax.xaxis.set_major_locator(mdates.HourLocator(interval=hours))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        lines, labels = ax.get_legend_handles_labels()
        p_lines, p_labels = price_ax.get_legend_handles_labels()
        ax.legend(lines + p_lines, labels + p_labels, loc="upper left", fontsize=8, framealpha=0.9)
        ax.set_title(chart_title(title, len(optimized.cars), saving_percent, start, end))
        ax.set_xlabel("simulated time (UTC)")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
