"""The dashboard: a Textual app over `snapshot()` (the state file) and `query_daemon()` (ZeroMQ).

Keys: p pause/resume, s stop the daemon (asks first), q quit the dashboard (the
daemon keeps running). Ctrl-C quits with the result "interrupt", which
`hexzd start` takes as "stop the daemon too". The app's return value is
"quit" or "interrupt".
"""

import asyncio

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Label, Static

from hexzd.tui import views
from hexzd.tui.data import query_daemon, snapshot

PANELS = {  # id: title
    "workers": "workers",
    "throughput": "throughput",
    "training": "training and tuner",
    "models": "models and promotions",
    "duels": "duels",
    "config": "config history",
    "events": "events",
}


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


class Dashboard(App[str]):
    TITLE = "hexzd"
    CSS = """
    #daemon { height: auto; padding: 0 1; }
    #banner { height: auto; padding: 0 1; border: heavy $error; display: none; }
    #banner.refused { display: block; }
    Grid { grid-size: 2 4; grid-rows: auto auto auto 1fr; grid-gutter: 0 1; }
    .panel { border: round $primary-lighten-2; padding: 0 1; height: auto; }
    #events { column-span: 2; height: 1fr; }
    """
    BINDINGS = [
        Binding("p", "pause", "pause/resume"),
        Binding("s", "stop", "stop daemon"),
        Binding("q", "quit", "quit (daemon keeps running)"),
        Binding("ctrl+c", "interrupt", "stop and quit", show=False, priority=True),
    ]

    def __init__(self, db, interval: float = 1.5):
        super().__init__()
        self.db, self.interval = db, interval
        self.status: dict | None = None
        self.snap: dict = {"db": str(db), "error": "reading the state file..."}
        self.problem: str | None = None
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Static("connecting...", id="daemon")
        yield Static("", id="banner")
        with Grid():
            for name in ("workers", "throughput", "training", "duels", "models", "config", "events"):
                panel = Static("", id=name, classes="panel")
                panel.border_title = PANELS[name]
                yield panel
        yield Footer()

    async def on_mount(self) -> None:
        self.sub_title = str(self.db)
        await self.refresh_data()
        self.set_interval(self.interval, self.refresh_data)

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
            self.snap = await asyncio.to_thread(snapshot, self.db)
        finally:
            self.busy = False
        self.show()

    def show(self) -> None:
        status, snap = self.status, self.snap
        self.query_one("#daemon", Static).update(views.daemon_line(status, snap, self.problem))
        banner = self.query_one("#banner", Static)
        refused = views.config_banner(status, snap)
        banner.set_class(refused is not None, "refused")
        banner.update(refused or "")
        panels = {
            "workers": views.workers_panel(status),
            "throughput": views.throughput_panel(snap),
            "training": views.training_panel(snap),
            "models": views.models_panel(snap),
            "duels": views.duels_panel(status, snap),
            "config": views.config_panel(snap),
            "events": views.events_panel(snap),
        }
        for name, text in panels.items():
            text.rstrip()
            self.query_one(f"#{name}", Static).update(text)

    # -- keys ---------------------------------------------------------------------

    async def action_pause(self) -> None:
        if self.status is None:
            self.notify("no daemon is running", severity="warning")
            return
        command = "resume" if self.status["state"] == "paused" else "pause"
        status = await self._ask(command)
        if status is not None:
            self.status = status
            self.notify(f"{command}d")
            self.show()

    def action_stop(self) -> None:
        if self.status is None:
            self.notify("no daemon is running", severity="warning")
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
