"""The dashboard's panels as rich Text, from `snapshot()` and the daemon's status: no widgets here."""

from rich.text import Text

BARS = "▁▂▃▄▅▆▇█"
LEVEL_STYLE = {"debug": "dim", "info": "", "warning": "yellow", "error": "bold red"}


def sparkline(values, width: int = 24) -> str:
    """The last `width` values as block characters, scaled from their min to their max."""
    values = [v for v in values if v is not None][-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return BARS[0] * len(values)
    return "".join(BARS[round((v - low) / (high - low) * (len(BARS) - 1))] for v in values)


def ago(at: float | None, now: float) -> str:
    if at is None:
        return "-"
    s = max(0, int(now - at))
    if s < 60:
        return f"{s}s ago"
    if s < 3600:
        return f"{s // 60}m ago"
    if s < 86400:
        return f"{s // 3600}h{s // 60 % 60:02d}m ago"
    return f"{s // 86400}d ago"


def duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def number(value: float | None) -> str:
    if value is None:
        return "-"
    a = abs(value)
    if a >= 1e6:
        return f"{value / 1e6:.2f}M"
    if a >= 1e4:
        return f"{value / 1e3:.1f}k"
    if a >= 100 or value == int(value):
        return f"{value:,.0f}"
    if a >= 0.01:
        return f"{value:.3g}" if a < 1 else f"{value:.2f}"
    return f"{value:.2e}"


def model_name(model_id) -> str:
    return "random rollouts" if model_id is None else f"model {model_id}"


def _unreadable(snap: dict) -> Text | None:
    return Text(snap["error"], style="yellow") if snap.get("error") else None


# -- the header and the refused-config banner ------------------------------------


def daemon_line(status: dict | None, snap: dict, problem: str | None = None) -> Text:
    """The daemon's state in one line; without a daemon, says so and what is shown instead."""
    if status is None:
        line = Text("daemon not running", style="bold white on red")
        line.append(
            f"  {problem or 'no daemon answers'}; showing the state file {snap['db']}  (start one with `hexzd start`)",
            style="red",
        )
        if snap.get("counters"):
            c = snap["counters"]
            line.append(
                f"\nas last saved: games {c.get('games', 0):,.0f}  positions {c.get('positions', 0):,.0f}"
                f"  step {c.get('train_step', 0):,.0f}  best {model_name(snap['best'])}",
                style="dim",
            )
        return line
    state = status["state"]
    style = {"running": "bold black on green", "paused": "bold black on yellow"}.get(state, "bold white on red")
    line = Text(f" {state.upper()} ", style=style)
    c = status["counters"]
    line.append(
        f"  daemon {status['pid']}  up {duration(status['uptime'])}  best {model_name(status['best'])}"
        f"  games {c['games']:,.0f}  positions {c['positions']:,.0f}  step {c['train_step']:,.0f}"
        f"  on {status['db']}"
    )
    return line


def config_banner(status: dict | None, snap: dict) -> Text | None:
    """A refused config edit, loud; None while the config in force is the file's."""
    error = status.get("config_error") if status else None
    history = snap.get("config") or []
    if error is None and history and not history[0]["accepted"]:
        error = history[0]["error"]
    if not error:
        return None
    text = Text("CONFIG EDIT REFUSED ", style="bold white on red")
    text.append(f" {error}", style="bold red")
    text.append("\nthe daemon keeps the last good config; fix config.toml and save it again", style="red")
    return text


# -- panels ------------------------------------------------------------------------


def workers_panel(status: dict | None) -> Text:
    if status is None:
        return Text("no daemon: no workers", style="dim")
    text = Text()
    for name, w in status["workers"].items():
        text.append(f"{name:<12} ")
        text.append("alive " if w["alive"] else "DOWN  ", style="green" if w["alive"] else "bold red")
        text.append(f"pid {w['pid'] or '-':<8} restarts {w['restarts']}\n", style="yellow" if w["restarts"] else "")
    return text if text.plain else Text("no workers yet", style="dim")


def _series_line(text: Text, label: str, samples: list, now: float, unit: str = "") -> None:
    if not samples:
        text.append(f"{label:<14} -\n", style="dim")
        return
    at, latest = samples[-1]
    text.append(f"{label:<14} {number(latest) + unit:>9} ")
    text.append(sparkline([v for _, v in samples]), style="cyan")
    if now - at > 60:
        text.append(f" ({ago(at, now)})", style="dim")
    text.append("\n")


def throughput_panel(snap: dict) -> Text:
    if (bad := _unreadable(snap)) is not None:
        return bad
    series, now, text = snap["series"], snap["now"], Text()
    for label, name in (
        ("games/s", "games_per_s"),
        ("positions/s", "positions_per_s"),
        ("train steps/s", "train_step_per_s"),
    ):
        _series_line(text, label, series[name], now)
    # The tuner lowers sims only while this is high: self-play cannot keep the trainer busy.
    _series_line(text, "trainer waits", [(at, 100 * v) for at, v in series["train_waiting"]], now, "%")
    if snap["gpu"]:
        for name in snap["gpu"]:
            _series_line(text, name.removeprefix("gpu_"), series[name], now)
    else:
        text.append("no GPU", style="dim")
    return text


def training_panel(snap: dict) -> Text:
    if (bad := _unreadable(snap)) is not None:
        return bad
    series, now, text = snap["series"], snap["now"], Text()
    _series_line(text, "policy loss", series["policy_loss"], now)
    _series_line(text, "value loss", series["value_loss"], now)
    _series_line(text, "lr", series["lr"], now)
    text.append("tuner: ", style="bold")
    if not snap["tuning"]:
        text.append("tuner idle", style="dim")
    for row in snap["tuning"]:
        text.append(
            f"\n  {ago(row['at'], now):>8}  {row['knob']} {number(row['old'])} -> {number(row['new'])}  {row['reason']}"
        )
    return text


def _rating(row: dict) -> str:
    if row["rating"] is None:
        return "-"
    if row["rating_lo"] is None or row["rating_hi"] is None:
        return f"{row['rating']:.0f}"
    return f"{row['rating']:.0f} ±{(row['rating_hi'] - row['rating_lo']) / 2:.0f}"


def models_panel(snap: dict) -> Text:
    if (bad := _unreadable(snap)) is not None:
        return bad
    now = snap["now"]
    text = Text(
        f"{snap['model_count']} models, {snap['promotion_count']} promotions, best {model_name(snap['best'])}\n",
        style="bold",
    )
    text.append(f"{'model':>6} {'step':>7} {'rating':>11}  promoted\n", style="dim")
    for row in snap["models"]:
        promoted = row["promoted_at"] is not None
        line = f"{row['id']:>6} {row['train_step']:>7,} {_rating(row):>11}  "
        line += f"yes, {ago(row['promoted_at'], now)}" if promoted else "-"
        text.append(line + "\n", style="bold green" if row["id"] == snap["best"] else "")
    if not snap["models"]:
        text.append("no snapshots yet\n", style="dim")
    if snap.get("references"):
        text.append("references: ", style="bold")
        text.append(", ".join(f"{r['player']} {_rating(r)}" for r in snap["references"]) + "\n")
    if snap["promotions"]:
        text.append("promotions\n", style="bold")
    for p in snap["promotions"]:
        record = f"{p['wins']}-{p['losses']}" if p["wins"] is not None else "-"
        text.append(f"  model {p['model_id']} over {model_name(p['replaced'])}: {record}  {ago(p['at'], now)}")
        if rows := snap.get("perfect_play", {}).get(p["model_id"]):
            text.append(
                "  perfect-move "
                + ", ".join(
                    f"{r['kept'] / r['won']:.0%} {'raw' if r['sims'] == 0 else '@' + str(r['sims'])}"
                    for r in rows
                    if r["won"]
                ),
                style="cyan",
            )
        text.append("\n")
    return text


def _player(model_id, sims: int | None) -> str:
    if sims is None:  # a schema without per-side simulation counts
        return model_name(model_id)
    return f"rollouts @{sims}" if model_id is None else f"model {model_id} @{sims}"


def _duel_result(d: dict) -> str:
    llr = "" if d["llr"] is None else f"  llr {d['llr']:+.2f}"
    sims = d.get("opponent_sims") is not None
    candidate = _player(d["candidate_id"], d["sims"] if sims else None)
    opponent = _player(d["opponent_id"], d.get("opponent_sims"))
    return f"{d.get('kind') or 'duel'} {d['id']}: {candidate} vs {opponent}  {d['wins']}-{d['losses']}{llr}"


def duels_panel(status: dict | None, snap: dict) -> Text:
    if (bad := _unreadable(snap)) is not None:
        return bad
    now, text = snap["now"], Text()
    current = [d for d in snap["duels"] if d["finished_at"] is None]
    text.append("now: " if status else "unfinished: ", style="bold")
    for d in current:
        text.append(("\n  " if len(current) > 1 else "") + _duel_result(d) + f"  (since {ago(d['started_at'], now)})")
    if not current:
        text.append(
            status["duel"] if status and status.get("duel") else "no duel under way",
            style="" if status and status.get("duel") else "dim",
        )
    text.append("\n")
    for d in snap["duels"]:
        if d["finished_at"] is None:
            continue
        style = {"accepted": "green", "rejected": "red"}.get(d["result"], "dim")
        text.append(f"  {_duel_result(d)}  ")
        text.append(f"{d['result'] or '-'}", style=style)
        text.append(f"  {ago(d['finished_at'], now)}\n")
    return text


def config_panel(snap: dict) -> Text:
    if (bad := _unreadable(snap)) is not None:
        return bad
    text = Text()
    for row in snap["config"]:
        text.append(f"#{row['id']:<4} {ago(row['at'], snap['now']):>9}  ")
        if row["accepted"]:
            text.append("accepted\n", style="green")
        else:
            text.append(f"REFUSED: {row['error']}\n", style="bold red")
    return text if text.plain else Text("no config recorded yet", style="dim")


def events_panel(snap: dict) -> Text:
    if (bad := _unreadable(snap)) is not None:
        return bad
    text = Text()
    for e in snap["events"]:
        text.append(f"{ago(e['at'], snap['now']):>9} {e['source']:<11} ", style="dim")
        text.append(f"{e['message']}\n", style=LEVEL_STYLE.get(e["level"], ""))
    return text if text.plain else Text("no events yet", style="dim")
