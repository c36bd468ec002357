"""`hexzd attach` and `hexzd start` with the dashboard: the daemon runs as a background process.

`start_attached` launches `python -m hexzd start --headless ...` in its own
session (output to run.sqlite.d/daemon.log), waits for its control socket to
answer, then runs the dashboard. `q` leaves the daemon running; Ctrl-C asks it
to stop gracefully and waits (Ctrl-C again forces it).
"""

import signal
import subprocess
import sys
import time

import click

from hexzd import processes
from hexzd.daemon.rundir import RunDir, UnsafeRunDir
from hexzd.tui.data import query_daemon


def _dashboard(db) -> str:
    from hexzd.tui.app import Dashboard

    return Dashboard(db).run() or "quit"


def attach(db) -> None:
    """Runs the dashboard on `db`; whatever the key, the daemon keeps running."""
    _dashboard(db)
    if query_daemon(db, "status", timeout=0.5) is not None:
        click.echo(f"the daemon keeps running; `hexzd stop --db {db}` stops it")


def _wait_stopped(child: subprocess.Popen) -> int:
    """Waits for a stopping daemon; a Ctrl-C meanwhile is its second signal, which forces the stop."""
    click.echo("stopping the daemon gracefully (Ctrl-C again to force)...")
    try:
        code = child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        code = child.wait()
    click.echo(f"the daemon has stopped (exit code {code})")
    return code


def _stop(db, child: subprocess.Popen) -> int:
    try:
        answered = query_daemon(db, "stop", timeout=2.0) is not None
    except Exception:
        answered = False
    if not answered and child.poll() is None:
        child.send_signal(signal.SIGINT)  # the daemon takes SIGINT as a graceful stop too
    return _wait_stopped(child)


def start_attached(config_path, db, duration: float | None) -> int:
    """Starts the daemon in the background and the dashboard in front; returns the exit code."""
    running = query_daemon(db, "status", timeout=1.0)
    if running is not None:
        raise click.ClickException(
            f"a hexzd daemon (pid {running['pid']}) is already running on {db}; `hexzd attach --db {db}` shows it"
        )
    try:
        run_dir = RunDir.of(db).make()  # 0700, and refused if someone else could write in it
    except UnsafeRunDir as e:
        raise click.ClickException(str(e)) from None
    log = run_dir.log("daemon")
    command = [sys.executable, "-m", "hexzd", "start", "--headless", "--config", str(config_path), "--db", str(db)]
    if duration:
        command += ["--for", str(duration)]
    with open(log, "ab") as out:
        offset = out.tell()
        # Its own session: `q` may leave it running after we exit. Unlike hexzd.processes.stop,
        # nothing kills it at a deadline: `_stop` asks it, and only a second Ctrl-C forces it.
        child = processes.start(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    click.echo(f"starting the daemon (pid {child.pid}, log {log})...")
    try:
        while (query_daemon(db, "status", timeout=0.5) or {}).get("pid") != child.pid:
            if child.poll() is not None:
                with open(log, "rb") as f:
                    f.seek(offset)
                    click.echo(f.read().decode(errors="replace").rstrip(), err=True)
                return child.returncode or 1
            time.sleep(0.2)
        result = _dashboard(db)
    except KeyboardInterrupt:
        result = "interrupt"
    except Exception:
        click.echo(
            f"the dashboard failed; the daemon (pid {child.pid}) keeps running: `hexzd stop --db {db}`", err=True
        )
        raise
    if (
        result == "interrupt"
        or child.poll() is None
        and (query_daemon(db, "status", 0.5) or {}).get("state") == "stopping"
    ):
        return _stop(db, child)
    if child.poll() is not None:
        click.echo(f"the daemon has exited (code {child.returncode}); its log is {log}")
        return 0
    click.echo(
        f"the daemon keeps running (pid {child.pid}, log {log});"
        f" `hexzd stop --db {db}` stops it, `hexzd attach --db {db}` shows it again"
    )
    return 0
