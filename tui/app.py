"""The dashboard: a Textual app over `snapshot()` (the state file) and `query_daemon()` (ZeroMQ).

Four tabs: overview (the panels of numbers), game (a self-play game in
progress), charts (ratings, losses, throughput over the whole run) and system
(devices, CPU, the tuner, config edits). Keys: 1-4 tabs, p pause/resume,
r reload config.toml, S stop the daemon (asks first), ? help, q quit the
dashboard (the daemon keeps running). Ctrl-C quits with the result
"interrupt", which `hexzd start` takes as "stop the daemon too". The app's
return value is "quit" or "interrupt". A daemon that dies or restarts is
noticed, said, and picked up again when it answers.
"""

import asyncio
import functools
import time

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Footer, Label, Static, TabbedContent, TabPane
from textual_plotext import PlotextPlot

from hexzd.tui import charts, views
from hexzd.tui.data import History, query_daemon, snapshot

PANELS = {  # id: title
    "workers": "workers",
    "throughput": "throughput",
    "training": "training",
    "models": "models and promotions",
    "duels": "duels",
    "events": "events",
    "device": "devices and CPU",
    "tuner": "tuner",
    "config": "config history",
}
OVERVIEW = ("workers", "throughput", "training", "duels", "models", "events")
SYSTEM = ("device", "tuner", "config")
CHARTS = ("rating-minutes", "rating-pflop", "losses", "rates", "steps")
SERIES_CHARTS = {  # chart: (title, {label: metric}, labels on a right-hand axis)
    "losses": ("training losses", {"policy": "policy_loss", "value": "value_loss"}, ()),
    "rates": (
        "self-play per second (positions: right axis)",
        {"evaluations": "evals_per_s", "positions": "positions_per_s"},
        ("positions",),
    ),
    "steps": ("training steps per second", {"steps": "train_step_per_s"}, ()),
}
CHARTS_PER_FRAME = 1  # a chart costs 10-45 ms to draw: a frame redraws at most this many
WIDE = 140  # columns from which the overview shows the board beside the panels


class ConfirmStop(ModalScreen[bool]):
    """Asks before stopping the daemon: y or Enter stops, n or Escape does not."""

    BINDINGS = [Binding("y", "answer(True)", "stop"), Binding("n,escape", "answer(False)", "cancel")]
    DEFAULT_CSS = """
    ConfirmStop { align: center middle; }
    ConfirmStop > Vertical { width: 56; height: auto; border: thick $error; background: $surface; padding: 1 2; }
    ConfirmStop Horizontal { height: auto; margin-top: 1; }
    ConfirmStop Button { margin-right: 2; }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Stop the daemon? Workers finish in-flight work and exit.")
            with Horizontal():
                yield Button("Stop (y)", variant="error", id="yes")
                yield Button("Cancel (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class Help(ModalScreen[None]):
    """Every key, and how to read the board and charts. Escape, q or ? closes it."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]
    DEFAULT_CSS = """
    Help { align: center middle; }
    Help > VerticalScroll { width: 78; max-height: 90%; height: auto; border: thick $primary; background: $surface;
                            padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(views.HELP, id="help")


class Board(Widget):
    """The live game, drawn to fit the room the widget has."""

    DEFAULT_CSS = "Board { height: 1fr; width: 1fr; }"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.live: dict | None = None

    def show(self, live: dict | None) -> None:
        if live == self.live:
            return
        if live and self.id == "board-side":  # beside the panels: as wide as the board, no wider
            self.styles.width = views.board_size_needed(live["board_size"])[0] + 4
        self.live = live
        self.refresh()

    def render(self):
        if self.live is None:
            return views.game_caption(None, None)
        return views.board_text(self.live, self.content_size.width, self.content_size.height)


class Dashboard(App[str]):
    TITLE = "hexzd"
    CSS = """
    #daemon { height: auto; padding: 0 1; }
    #banner { height: auto; padding: 0 1; border: heavy $error; display: none; }
    #banner.refused { display: block; }
    .panel { border: round $primary-lighten-2; padding: 0 1; height: auto; }
    #overview-grid { grid-size: 2; grid-rows: auto; grid-gutter: 0 1; height: auto; }
    #events { column-span: 2; }
    #board-side { display: none; width: 30; border: round $primary-lighten-2; }
    Screen.wide #board-side { display: block; }
    Screen.narrow #overview-grid, Screen.narrow #system-grid, Screen.narrow #chart-grid { grid-size: 1; }
    Screen.narrow #events { column-span: 1; }
    #system-grid { grid-size: 2; grid-rows: auto; grid-gutter: 0 1; height: auto; }
    #config { column-span: 2; }
    #chart-grid { grid-size: 2; grid-rows: 16; grid-gutter: 0 1; height: auto; }
    #board { border: round $primary-lighten-2; }
    #caption { height: auto; padding: 0 1; }
    TabbedContent, ContentSwitcher, TabPane { height: 1fr; }
    TabPane { padding: 0; }
    """
    BINDINGS = [
        Binding("p", "pause", "pause/resume"),
        Binding("r", "reload", "reload config"),
        Binding("S", "stop", "Stop daemon"),
        Binding("question_mark", "help", "help"),
        Binding("q", "quit", "quit (daemon runs on)"),
        Binding("pagedown", "scroll(1)", "scroll", show=False),
        Binding("pageup", "scroll(-1)", "scroll", show=False),
        *(
            Binding(str(i), f"tab('{tab}')", tab, show=False)
            for i, tab in enumerate(("overview", "game", "charts", "system"), 1)
        ),
        Binding("ctrl+c", "interrupt", "stop and quit", show=False, priority=True),
    ]

    def __init__(self, db, interval: float = 1.0, clock=time.time):
        super().__init__()
        self.db, self.interval, self.clock = db, interval, clock
        self.status: dict | None = None
        self.snap: dict = {"db": str(db), "error": "reading the state file..."}
        self.history = History()
        self.chart_keys: dict[str, object] = {}  # what each chart last drew: unchanged data is not redrawn
        self.problem: str | None = None
        self.busy = False
        self.seen_pid: int | None = None  # the daemon last seen: a change is a restart, None a loss
        self.looked = False  # whether a status request has been made: the first finds things as they are

    def compose(self) -> ComposeResult:
        yield Static("connecting...", id="daemon")
        yield Static("", id="banner")
        with TabbedContent(initial="overview", id="tabs"):
            with TabPane("1 overview", id="overview"), Horizontal():
                with VerticalScroll(), Grid(id="overview-grid"):
                    yield from self._panels(OVERVIEW)
                yield Board(id="board-side")
            with TabPane("2 game", id="game"), Vertical():
                yield Board(id="board")
                yield Static("", id="caption")
            with TabPane("3 charts", id="charts"), VerticalScroll(), Grid(id="chart-grid"):
                for name in CHARTS:
                    yield PlotextPlot(id=f"chart-{name}")
            with TabPane("4 system", id="system"), VerticalScroll(), Grid(id="system-grid"):
                yield from self._panels(SYSTEM)
        yield Footer()

    @staticmethod
    def _panels(names):
        for name in names:
            panel = Static("", id=name, classes="panel")
            panel.border_title = PANELS[name]
            yield panel

    async def on_mount(self) -> None:
        self.sub_title = str(self.db)
        self._fit(self.size.width)
        await self.refresh_data()
        self.set_interval(self.interval, self.refresh_data)

    def on_resize(self, event) -> None:
        self._fit(event.size.width)

    def _fit(self, width: int) -> None:
        self.screen.set_class(width >= WIDE, "wide")
        self.screen.set_class(width < 100, "narrow")

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.show()  # a tab shows what it missed while hidden (charts draw only while seen)

    # -- data ---------------------------------------------------------------------

    async def _ask(self, command: str) -> dict | None:
        """The daemon's status after `command`, off the UI thread; None (and self.problem) if unreachable."""
        try:
            status = await asyncio.to_thread(query_daemon, self.db, command)
            self.problem = None if status is not None else "no daemon answers on the control socket"
        except Exception as e:  # a refusal, a socket path too long, a zmq error: shown, not fatal
            status, self.problem = None, str(e)
        return status

    async def refresh_data(self) -> None:
        if self.busy:
            return
        self.busy = True
        try:
            self.status = await self._ask("status")
            self.snap = await asyncio.to_thread(snapshot, self.db, self.history, self.clock())
        finally:
            self.busy = False
        self._notice_restarts()
        try:
            self.show()
        except NoMatches:  # the refresh outlived its screen: the app is closing (or not yet composed)
            pass

    def _notice_restarts(self) -> None:
        """Says when the daemon goes away, comes back, or is another process: the dashboard follows it."""
        pid = self.status["pid"] if self.status else None
        if pid != self.seen_pid and self.looked:
            if pid is None:
                self.notify(
                    "lost the daemon: it stopped or died; showing the state file until one answers", severity="warning"
                )
            elif self.seen_pid is not None:
                self.notify(f"the daemon restarted: pid {self.seen_pid} -> {pid}", severity="warning")
            else:
                self.notify(f"a daemon answers again (pid {pid})")
        self.seen_pid, self.looked = pid, True

    def show(self) -> None:
        status, snap = self.status, self.snap
        self.query_one("#daemon", Static).update(views.daemon_line(status, snap, self.problem))
        banner = self.query_one("#banner", Static)
        refused = views.config_banner(status, snap)
        banner.set_class(refused is not None, "refused")
        banner.update(refused or "")
        active = self.query_one("#tabs", TabbedContent).active
        if active == "overview":
            self._fill(
                workers=views.workers_panel(status),
                throughput=views.throughput_panel(snap),
                training=views.training_panel(snap),
                models=views.models_panel(snap),
                duels=views.duels_panel(status, snap),
                events=views.events_panel(snap),
            )
        elif active == "system":
            self._fill(
                device=views.device_panel(status),
                tuner=views.tuner_panel(status, snap),
                config=views.config_panel(snap),
            )
        elif active == "charts":
            self._draw_charts()
        live = status.get("live") if status else None
        for board in self.query(Board):
            board.show(live)
        self.query_one("#caption", Static).update(views.game_caption(live, status))

    def _fill(self, **panels) -> None:
        for name, text in panels.items():
            self.query_one(f"#{name}", Static).update(text)

    def _draw_charts(self) -> None:
        """Redraws the charts whose data changed, at most CHARTS_PER_FRAME a frame: plotext is slow."""
        snap = self.snap
        if snap.get("error"):
            return
        ratings, started, series = snap["ratings"], snap["started"], self.history.series
        changed = []
        for name in CHARTS:
            if name.startswith("rating-"):
                key = repr(ratings)
                draw = functools.partial(charts.rating_chart, ratings=ratings, started=started, x=name[7:])
            else:
                title, lines, right = SERIES_CHARTS[name]
                key = tuple(series[metric].last for metric in lines.values())
                xy = {label: series[metric].xy() for label, metric in lines.items()}
                draw = functools.partial(charts.series_chart, title=title, lines=xy, started=started, right=right)
            if key != self.chart_keys.get(name):
                changed.append((name, key, draw))
        for name, key, draw in changed[:CHARTS_PER_FRAME]:  # the rest in the next frames
            plot = self.query_one(f"#chart-{name}", PlotextPlot)
            draw(plot.plt)
            plot.refresh()
            self.chart_keys[name] = key

    # -- keys ---------------------------------------------------------------------

    def action_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab

    def action_scroll(self, pages: int) -> None:
        """Page Up/Down scroll the tab in view, whatever has the focus."""
        pane = self.query_one("#tabs", TabbedContent).active_pane
        for scroller in pane.query(VerticalScroll) if pane else ():
            scroller.scroll_to(y=scroller.scroll_y + pages * max(1, scroller.size.height - 2), animate=False)

    def action_help(self) -> None:
        self.push_screen(Help())

    def _need_daemon(self) -> bool:
        if self.status is None:
            self.notify("no daemon is running", severity="warning")
        return self.status is not None

    async def action_pause(self) -> None:
        if not self._need_daemon():
            return
        command = "resume" if self.status["state"] == "paused" else "pause"
        status = await self._ask(command)
        if status is not None:
            self.status = status
            self.notify(f"{command}d")
            self.show()

    async def action_reload(self) -> None:
        if not self._need_daemon():
            return
        status = await self._ask("reload")
        if status is None:
            return
        self.status = status
        if status["config_error"]:
            self.notify(f"config.toml refused: {status['config_error']}", severity="error", timeout=10)
        else:
            self.notify("config.toml read; the config in force is the file's")
        await self.refresh_data()

    def action_stop(self) -> None:
        if not self._need_daemon():
            return

        async def confirmed(yes: bool | None) -> None:
            if yes and await self._ask("stop") is not None:
                self.notify("stopping: the daemon finishes in-flight work and exits")
                await self.refresh_data()

        self.push_screen(ConfirmStop(), confirmed)

    async def action_quit(self) -> None:
        self.exit("quit")

    def action_interrupt(self) -> None:
        self.exit("interrupt")
