"""The dashboard's panels as rich Text, from `snapshot()` and the daemon's status: no widgets here."""

from rich.text import Text

from hexzd.game.notation import cell_name, parse_trmph

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
    text.append(f" {error}", style="bold")  # the theme's own text colour: readable in light and dark
    text.append("\nthe daemon keeps the last good config; fix config.toml and save it again")
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


# -- the live game -------------------------------------------------------------------

BOARD = "on #c8a165"  # a wooden board: Black and White stones read the same in light and dark themes
BLACK_STONE, WHITE_STONE = "bold #000000 " + BOARD, "bold #ffffff " + BOARD
BLACK_EDGE = "bold #000000 " + BOARD
SHADES = ("#c8a165", "#a8b86a", "#86c46e", "#5fd06f", "#2fe070")  # visit shares, none to most


def board_size_needed(n: int, compact: bool = False) -> tuple[int, int]:
    """(columns, rows) a board of side n takes, two columns a cell or (compact) one."""
    cell = 1 if compact else 2
    return n + 4 + cell * n, n + 3


def _played(live: dict) -> list[int]:
    return parse_trmph(live["moves"], live["board_size"])


def board_text(live: dict, width: int = 200, height: int = 100) -> Text:
    """The game as a Hex rhombus, rows offset as in HexGui and MoHex's showboard.

    Black connects top and bottom (edges drawn in Black), White left and right.
    Empty cells are shaded by the search's visit share of the next move, the
    cell it chose is marked `◇`, and the last stone `◉`. Too little room: a
    compact one-column-a-cell board, or a line saying how big the terminal must be.
    """
    n = live["board_size"]
    compact = board_size_needed(n) > (width, height)
    need = board_size_needed(n, compact)
    if need[0] > width or need[1] > height:
        return Text(
            f"a {n}x{n} board needs {need[0]} x {need[1]} characters here, the panel has {width} x {height}:"
            " enlarge the terminal or its font",
            style="yellow",
        )
    moves = _played(live)
    stones = {}
    for ply, cell in enumerate(moves):
        stones[cell] = 1 if ply % 2 == 0 else 2
    visits = live.get("visits") or []
    top = max(visits, default=0.0) or 1.0
    last = moves[-1] if moves else None
    cell_w = 1 if compact else 2
    text = Text()
    text.append(" " * 4 + "".join(f"{chr(97 + c):<{cell_w}}" for c in range(n)).rstrip() + "\n", style="dim")
    text.append(" " * 3)
    text.append("▁" * (cell_w * n + 2) + "\n", style=BLACK_EDGE)
    for r in range(n):
        text.append(" " * r + f"{r + 1:>2} ", style="dim")
        text.append("▌", style=WHITE_STONE)
        for c in range(n):
            cell = r * n + c
            text.append(*_cell(stones.get(cell), cell == last, cell == live["chosen"], visits, cell, top))
            if not compact:
                text.append(" ", style=BOARD)
        text.append("▐", style=WHITE_STONE)
        text.append("\n")
    text.append(" " * (n + 2))
    text.append("▔" * (cell_w * n + 2), style=BLACK_EDGE)
    return text


def _cell(stone, is_last: bool, is_chosen: bool, visits, cell: int, top: float) -> tuple[str, str]:
    if stone:
        return ("◉" if is_last else "●"), (BLACK_STONE if stone == 1 else WHITE_STONE)
    share = visits[cell] if cell < len(visits) else 0.0
    shade = SHADES[min(len(SHADES) - 1, round(share / top * (len(SHADES) - 1)))] if share > 0 else SHADES[0]
    return ("◇" if is_chosen else "·"), f"{'bold #000000' if is_chosen else '#6b5330'} on {shade}"


def game_caption(live: dict | None, status: dict | None) -> Text:
    """Who plays the game on the board, whose move it is, and where the search leans."""
    if live is None:
        why = "no daemon" if status is None else "waiting for a self-play worker's first move"
        return Text(f"no game to show: {why}", style="dim")
    n, moves = live["board_size"], _played(live)
    player = "rollouts" if live["model_id"] is None else f"model {live['model_id']}"
    turn = "Black" if len(moves) % 2 == 0 else "White"
    text = Text(f"{live['worker']}: {player} @{live['sims']} sims ({live['backend']}), move {len(moves) + 1}, ")
    text.append(f"{turn} to play\n")
    visits = live.get("visits") or []
    best = sorted(range(len(visits)), key=lambda i: -visits[i])[:3]
    leaning = ", ".join(f"{cell_name(i, n)} {visits[i]:.0%}" for i in best if visits[i] > 0)
    text.append(f"search: {leaning or '-'}; plays {cell_name(live['chosen'], n)}", style="cyan")
    text.append("  (◉ last stone, ◇ next move, green: visit share)", style="dim")
    return text


# -- the machine and the tuner -------------------------------------------------------


def _gb(value) -> str:
    return "-" if value is None else f"{value / 2**30:.1f}"


def device_panel(status: dict | None) -> Text:
    """Each GPU's utilisation, memory and power; without one, each worker's CPU share and the load;
    with a Ray cluster, its nodes."""
    if status is None:
        return Text("no daemon: nothing measured", style="dim")
    text = Text()
    for d in status.get("devices") or []:
        util = "-" if d["util"] is None else f"{d['util']:.0%}"
        watts = "-" if d["watts"] is None else f"{d['watts']:.0f} W"
        text.append(f"GPU {d['index']} {d['name'] or ''}\n", style="bold")
        text.append(f"  util {util:>4}  memory {_gb(d['memory_used'])}/{_gb(d['memory_total'])} GB  {watts}\n")
    if not status.get("devices"):
        text.append(f"{status.get('no_devices') or 'no GPU'}\n", style="dim")
    cpu = status.get("cpu") or {}
    load = status.get("load") or []
    text.append(f"CPU: {cpu.get('cores', '?')} cores", style="bold")
    if load:
        text.append(f", load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    text.append("\n")
    for worker, share in sorted((cpu.get("recent") or {}).items()):
        text.append(f"  {worker:<12} {share:>6.1%} ")
        text.append("█" * round(20 * min(share, 1.0)), style="cyan")
        text.append("\n")
    if "eval_share" in cpu:
        text.append(f"evaluation since start: {cpu['eval_share']:.1%} of the machine\n", style="dim")
    backend = (status.get("live") or {}).get("backend")
    if backend:
        text.append(f"inference: {backend}\n")
    _nodes(text, status.get("cluster"))
    return text


def _nodes(text: Text, cluster: dict | None) -> None:
    """The Ray cluster's nodes ([cluster] address): devices, actors, batch, games/s and evals/s of each."""
    if not cluster:
        return
    text.append(f"Ray cluster at {cluster['address']}: {len(cluster['nodes'])} nodes\n", style="bold")
    for n in cluster["nodes"]:
        text.append(f"  {n['node'][:8]} {n['address']}  {n['cpus']:g} CPUs {n['gpus']:g} GPUs\n")
        text.append(
            f"    {n['actors']} actors  batch {n['batch']}  {n['games_per_s']:.1f} games/s"
            f"  {n['evals_per_s']:,.0f} evals/s\n"
        )


def tuner_panel(status: dict | None, snap: dict) -> Text:
    """The simulations and batch in force with their bounds, and the tuner's last decisions with reasons."""
    text = Text()
    tuner = (status or {}).get("tuner")
    if tuner:
        state = "on" if tuner["enabled"] else "off (tune.enabled = false)"
        text.append(f"tuner {state}\n", style="bold")
        lo, hi = tuner["sims_bounds"]
        text.append(f"sims  {tuner['sims']:>6}  in [{lo}, {hi}]\n")
        lo, hi = tuner["batch_bounds"]
        text.append(f"batch {tuner['batch']:>6}  in [{lo}, {hi}]  x {tuner['groups']} groups\n")
    else:
        text.append("no daemon: the bounds in force are unknown\n", style="dim")
    if snap.get("error"):
        return text
    if not snap["tuning"]:
        text.append("no decisions yet", style="dim")
    for row in snap["tuning"]:
        text.append(f"{ago(row['at'], snap['now']):>8} ", style="dim")
        text.append(f"{row['knob']} {number(row['old'])} -> {number(row['new'])}: ", style="bold")
        text.append(f"{row['reason']}\n")
    return text


HELP = """\
[b]Keys[/b]
  [b]1[/b]-[b]4[/b]  the tabs: overview, game, charts, system
  [b]PgUp[/b] [b]PgDn[/b] scroll the tab (or the mouse wheel)
  [b]p[/b]    pause or resume self-play, training and duels
  [b]r[/b]    reload config.toml now (the daemon also looks every second)
  [b]S[/b]    stop the daemon, after a confirmation
  [b]q[/b]    detach: quit the dashboard, the daemon keeps running
  [b]?[/b]    this help; Escape closes it
  [b]ctrl+c[/b] under `hexzd start`: stop the daemon and quit

[b]The board[/b] follows one self-play game; when it ends, the next.
Black connects top and bottom, White left and right. ◉ marks the last
stone, ◇ the search's next move; green shows its visit shares.

[b]Charts[/b] cover the whole run, averaged into at most 128 points.
Ratings are Elo on the run's scale, with 95% intervals; rollouts at the
first reference's simulations are 0."""
