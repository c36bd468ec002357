"""The dashboard's charts: plotext figures drawn from the state file's history (see data.History).

Each function fills one `plt` (a textual-plotext widget's Plot) from plain data.
Drawing cost follows the points, so every series is at most CHART_POINTS long.
"""

MINUTE = 60.0
ERROR_BARS = 48  # at most: plotext draws each bar as a line of its own, the chart's dearest part


def _clear(plt, title: str, xlabel: str) -> None:
    plt.clear_data()
    plt.clear_figure()
    plt.title(title)
    plt.xlabel(xlabel)


def _minutes(times, started: float | None) -> list[float]:
    start = started if started is not None else (min(times) if times else 0.0)
    return [(t - start) / MINUTE for t in times]


def rating_chart(plt, ratings: list[dict], started: float | None, x: str) -> int:
    """Promoted snapshots' ratings with their 95% intervals against minutes or PFLOP; returns the points drawn."""
    against = {"minutes": "minutes since start", "pflop": "PFLOP (self-play + training)"}[x]
    _clear(plt, f"rating of promoted snapshots (Elo, 95% interval) vs {x}", against)
    rated = [r for r in ratings if r["rating"] is not None]
    if not rated:
        plt.title("no rated promoted snapshot yet")
        return 0
    xs = (
        _minutes([r["created_at"] for r in rated], started)
        if x == "minutes"
        else [(r["total_flops"] or 0) / 1e15 for r in rated]
    )
    bounded = [(xv, r) for xv, r in zip(xs, rated) if r["rating_lo"] is not None and r["rating_hi"] is not None]
    bounded = bounded[::-1][:: -(-len(bounded) // ERROR_BARS)][::-1]  # every k-th bar, the newest kept
    if bounded:
        plt.error(
            [xv for xv, _ in bounded],
            [(r["rating_lo"] + r["rating_hi"]) / 2 for _, r in bounded],
            yerr=[r["rating_hi"] - r["rating_lo"] for _, r in bounded],
            color="gray",
        )
    plt.plot(xs, [r["rating"] for r in rated], marker="braille", color="green")
    plt.scatter(xs, [r["rating"] for r in rated], marker="dot", color="green")
    return len(rated)


def series_chart(plt, title: str, lines: dict[str, tuple[list, list]], started: float | None, right=()) -> int:
    """Metrics against minutes since start, one line each (those named in `right` on a right-hand axis of
    their own, for another scale); returns the points drawn."""
    _clear(plt, title, "minutes since start")
    drawn = 0
    for (label, (xs, ys)), color in zip(lines.items(), ("cyan", "magenta", "yellow", "green")):
        if xs:
            side = "right" if label in right else "left"
            plt.plot(_minutes(xs, started), ys, marker="braille", color=color, label=label, yside=side)
            drawn += len(xs)
    if not drawn:
        plt.title(f"{title}: no samples yet")
    return drawn
