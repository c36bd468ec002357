"""`hexzd league`: runs of different networks on one scale, with real state files,
real (untrained) networks and real games on a 4x4 board."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing

import numpy as np
import pytest
from click.testing import CliRunner
from states import add_model

from hexzd import store
from hexzd.cli import main
from hexzd.evaluation import scale
from hexzd.evaluation.scale import Pairing
from hexzd.store import ladder
from hexzd.store import league_file as db
from hexzd.studies.league import League, LeagueError, Settings, run_league

N = 4
# A league of seconds, with no kept ladder unless a test gives it one.
FAST = {"sims": 4, "match_pairs": 2, "ladder_pairs": 1, "references": [4, 16], "ladder_file": ""}


def make_run(path, channels=8, snapshots=2, board_size=N):
    store.prepare(path)
    for _ in range(snapshots):
        add_model(path, board_size, channels=channels)
    return path


def league(path, runs, lines=None, **settings):
    """A league session with the FAST settings; its progress lines go to `lines`."""
    echo = (lambda line: None) if lines is None else lines.append
    return run_league(path, [str(r) for r in runs], Settings(**(FAST | settings)), echo)


def read(path, sql, params=()):
    """A league file's rows, read only (store.read_only opens state files alone)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
        return c.execute(sql, params).fetchall()


def test_runs_of_two_network_sizes_are_rated_on_one_scale(tmp_path):
    small, big = make_run(tmp_path / "small.sqlite", 8), make_run(tmp_path / "big.sqlite", 16)
    path = tmp_path / "league.sqlite"
    summary = league(path, [small, big], games=48)
    assert summary["games"] == 48 and summary["stopped"] == "48 games played"
    rated = {(r["run"], r["model_id"]) for r in summary["ratings"]}
    assert rated >= {("small", 1), ("small", 2), ("big", 1), ("big", 2), (None, None)}
    anchor = next(r for r in summary["ratings"] if r["anchor"])
    assert (anchor["player"], anchor["rating"], anchor["sims"]) == ("rollouts @4", 0.0, 4)
    # The view a plot reads: every rated snapshot with its run's network and compute.
    shapes = set(read(path, "SELECT DISTINCT run, blocks, channels FROM rating_vs_compute"))
    assert shapes == {("small", 1, 8), ("big", 1, 16)}
    statuses = read(path, "SELECT status FROM rating_status")
    assert {s for (s,) in statuses} <= {"anchor", "rated", "too few games"}
    # No pairing plays a game twice with the same colours.
    played = read(
        path,
        "SELECT m.candidate_id, m.sims, m.opponent_id, m.opponent_sims, g.moves, g.candidate_colour"
        " FROM games g JOIN matches m ON m.id = g.match_id",
    )
    games = {}
    for a, sa, b, sb, moves, colour in played:
        if (a or 0, sa) > (b or 0, sb):  # one orientation per pairing (None: a reference)
            a, sa, b, sb, colour = b, sb, a, sa, 3 - colour
        games.setdefault((a, sa, b, sb), []).append((moves, colour))
    for pairing, seen in games.items():
        assert len(seen) == len(set(seen)), f"pairing {pairing} repeats a game"


def test_unusable_state_files_are_named_and_skipped_while_the_others_go_on(tmp_path):
    good = make_run(tmp_path / "good.sqlite")
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"\x00\x13not SQLite at all" * 512)
    newer = make_run(tmp_path / "newer.sqlite")
    with sqlite3.connect(newer) as c:
        c.execute(f"PRAGMA user_version = {store.VERSION + 1}")
    other = make_run(tmp_path / "other.sqlite", board_size=3)
    fresh = make_run(tmp_path / "fresh.sqlite", snapshots=0)
    missing = tmp_path / "missing.sqlite"
    lines = []
    summary = league(tmp_path / "league.sqlite", [good, corrupt, newer, other, fresh, missing], lines, games=4)
    reasons = {r["name"]: (r["status"], r["reason"]) for r in summary["runs"]}
    assert reasons["good"] == ("used", None)
    assert reasons["corrupt"] == ("skipped", "not a hexzd state file (file is not a database)")
    assert reasons["newer"][0] == "skipped" and "newer than this hexzd's" in reasons["newer"][1]
    assert reasons["other"] == ("skipped", "a 3x3 run; this league is 4x4")
    assert reasons["fresh"] == ("skipped", "no promoted snapshot yet")
    assert reasons["missing"] == ("skipped", "no such file")
    for name in ("corrupt", "newer", "other", "fresh", "missing"):
        assert any(line.startswith(f"skipped {tmp_path / name}.sqlite: ") for line in lines), name
    assert summary["games"] == 4
    # Alone, the unusable files are an error that names each one.
    result = CliRunner().invoke(main, ["league", str(corrupt), str(missing), "--db", str(tmp_path / "none.sqlite")])
    assert result.exit_code == 1 and "no usable state file" in result.output
    assert f"skipped {missing}: no such file" in result.output


def test_a_rerun_resumes_and_adds_the_snapshots_promoted_since(tmp_path):
    a, b = make_run(tmp_path / "a.sqlite"), make_run(tmp_path / "b.sqlite", 12)
    path = tmp_path / "league.sqlite"
    league(path, [a, b], games=8)
    before = read(path, "SELECT * FROM games ORDER BY id")
    assert len(before) == 8
    add_model(a, N)  # run a went on and promoted a third snapshot
    lines = []
    summary = league(path, [], lines, games=8)  # no runs given: the league's own
    assert read(path, "SELECT * FROM games ORDER BY id")[:8] == before and summary["games"] == 16
    assert f"{a}: 3 promoted snapshots (1 new), a 1x8 network" in lines
    assert read(path, "SELECT COUNT(*) FROM snapshots") == [(5,)]
    assert read(path, "SELECT name, status FROM runs ORDER BY id") == [("a", "used"), ("b", "used")]
    # Matches go on down each pairing's list of openings: no opening is played twice.
    firsts = read(path, "SELECT candidate_id, sims, opponent_id, opponent_sims, first_opening, pairs FROM matches")
    spans = {}
    for a_id, sa, b_id, sb, first, pairs in firsts:
        spans.setdefault(frozenset([(a_id, sa), (b_id, sb)]), []).append(range(first, first + pairs))
    for ranges in spans.values():
        openings = [i for r in ranges for i in r]
        assert len(openings) == len(set(openings))
    # A new run in b's file is another run: b's snapshots keep their games but play no more.
    b.unlink()
    make_run(b, 12, snapshots=1)
    summary = league(path, [], games=2)
    runs = {r["name"]: (r["status"], r["reason"]) for r in summary["runs"]}
    assert runs == {"a": ("used", None), "b": ("skipped", "its file now holds another run"), "b#2": ("used", None)}


def test_the_league_reads_a_state_file_while_its_daemon_writes(tmp_path):
    """WAL: a writer's open transaction neither blocks the league nor shows it half a write."""
    run = make_run(tmp_path / "run.sqlite")
    writer = sqlite3.connect(run, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(
            "INSERT INTO models (created_at, train_step, positions_seen, samples_trained, params, flops_per_eval,"
            " selfplay_flops, train_flops, wall_seconds, accel_seconds, positions_generated)"
            " VALUES (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)"
        )
        writer.execute("INSERT INTO promotions (model_id, at) VALUES (last_insert_rowid(), 0)")
        summary = league(tmp_path / "league.sqlite", [run], games=4)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert summary["games"] == 4 and [r["status"] for r in summary["runs"]] == ["used"]
    assert read(tmp_path / "league.sqlite", "SELECT COUNT(*) FROM snapshots") == [(2,)]


def test_a_stopped_match_keeps_its_whole_pairs_only(tmp_path):
    """Stopped once its first pair is stored: the games in flight are dropped, pairs stay whole."""
    run, path = make_run(tmp_path / "run.sqlite"), tmp_path / "league.sqlite"
    connection = db.open_league(path)
    try:
        session = League(connection, Settings(**FAST), lambda line: None)
        session.admit([str(run)])
        match = session.match(Pairing(None, 16, None, 4), 8, lambda: read(path, "SELECT COUNT(*) FROM games")[0][0] > 0)
    finally:
        connection.close()
    assert not match.whole and 0 < match.stored < 16 and match.stored % 2 == 0
    assert read(path, "SELECT COUNT(*) FROM games GROUP BY pair") == [(2,)] * (match.stored // 2)
    assert read(path, "SELECT finished_at, cpu_seconds FROM matches") == [(None, None)]


def test_a_league_file_newer_than_hexzd_is_refused(tmp_path):
    path = tmp_path / "league.sqlite"
    with sqlite3.connect(path) as c:
        c.execute(f"PRAGMA user_version = {db.VERSION + 1}")
    result = CliRunner().invoke(main, ["league", str(make_run(tmp_path / "run.sqlite")), "--db", str(path)])
    assert result.exit_code == 1 and "newer than this hexzd's" in result.output
    league(tmp_path / "four.sqlite", [tmp_path / "run.sqlite"], games=2)
    with pytest.raises(LeagueError, match="this league is 4x4, not 5x5"):
        league(tmp_path / "four.sqlite", [], size=5)


@pytest.mark.e2e
def test_the_command_a_sweep_prints_rates_its_runs_and_stops_cleanly_on_ctrl_c(tmp_path):
    """`hexzd league A B --db L` as a user runs it, with the default references; Ctrl-C
    after the first match stops it cleanly: exit 0, the table, only whole pairs kept."""
    a, b = make_run(tmp_path / "a.sqlite"), make_run(tmp_path / "b.sqlite", 16)
    path = tmp_path / "league.sqlite"
    process = subprocess.Popen(
        [sys.executable, "-m", "hexzd", "league", str(a), str(b), "--db", str(path), "--sims", "4", "--pairs", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1", "HOME": str(tmp_path)},  # a kept ladder of its own
    )
    try:
        lines = []
        while not any(" vs " in line for line in lines):
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, "".join(lines) + out
    assert "stopped: stopped by SIGINT" in out and "rollouts @100" in out
    assert "rollouts @200 vs rollouts @100" in "".join(lines)  # the default ladder's first step
    games = read(path, "SELECT match_id, pair, COUNT(*) FROM games GROUP BY match_id, pair")
    assert games and all(count == 2 for *_, count in games)
    # JSON: the summary on stdout, progress on stderr.
    result = CliRunner().invoke(main, ["league", "--db", str(path), "--games", "2", "--json"])
    summary = json.loads(result.stdout)
    assert {r["name"] for r in summary["runs"]} == {"a", "b"} and summary["games"] == len(games) * 2 + 2
    assert "2 games played" in result.stderr


LADDER = """SELECT m.sims, m.opponent_sims, g.pair, g.moves, g.candidate_colour, g.winner FROM games g
            JOIN matches m ON m.id = g.match_id WHERE m.candidate_id IS NULL AND m.opponent_id IS NULL"""


def kept_games(path, run=None):
    """(sims, opponent sims, pair, moves, candidate colour, winner) of the kept ladder's games, by plain sqlite3."""
    with sqlite3.connect(path) as c:
        where, params = ("WHERE run = ?", (run,)) if run else ("", ())
        return c.execute(
            f"SELECT sims, opponent_sims, pair, moves, candidate_colour, winner FROM games {where}", params
        ).fetchall()


def test_a_league_shares_the_kept_ladder_with_the_runs(tmp_path):
    """A league keeps its reference games in the kept ladder, and the next league starts from
    them and from a daemon's, so it plays no ladder match of its own; perfect play and
    references it does not have are left out, and a rerun copies nothing twice."""
    run, kept = make_run(tmp_path / "run.sqlite"), tmp_path / "ladder.sqlite"
    first = tmp_path / "first.sqlite"
    league(first, [run], games=2, ladder_file=str(kept))
    (name,) = read(first, "SELECT json_extract(value, '$') FROM meta WHERE key = 'run'")[0]
    own = sorted(read(first, LADDER))
    assert len(own) == 2 and sorted(kept_games(kept, name)) == own  # the ladder's first pair, kept
    key = scale.ladder_key(N, False)
    daemon = [  # (duel, pair, sims, opponent sims, engine, candidate colour, winner, moves, played at)
        (7, 0, 16, 4, "", 1, 1, "a1b2c3d4", 1.0),
        (7, 0, 16, 4, "", 2, 1, "a1b2c3d3", 1.0),
        (8, 0, 4, 0, "perfect", 1, 2, "b2c2", 1.0),  # perfect play: not a league player
        (9, 0, 200, 100, "", 1, 1, "c3", 1.0),  # references this league has not
    ]
    assert ladder.keep(kept, key, "a-daemon-run", daemon) == 4
    lines = []
    second = tmp_path / "second.sqlite"
    league(second, [run], lines, games=2, ladder_file=str(kept))
    assert f"the ladder has 4 more games, kept by runs in {kept}" in lines
    assert not any("rollouts @16 vs rollouts @4" in line for line in lines)  # the ladder was whole
    copied = sorted(read(second, LADDER))
    assert copied == sorted(own + [(16, 4, 0, "a1b2c3d4", 1, 1), (16, 4, 0, "a1b2c3d3", 2, 1)])
    assert read(second, "SELECT kept_from, kept_duel, cpu_seconds FROM matches WHERE kept_from = 'a-daemon-run'") == [
        ("a-daemon-run", 7, None)  # never a CPU-time sample for matchmaking
    ]
    lines.clear()
    league(second, [], lines, games=2, ladder_file=str(kept))
    assert not any("more games" in line for line in lines) and sorted(read(second, LADDER)) == copied


def test_a_league_counts_a_reference_game_it_has_once(tmp_path):
    """Two leagues that played the same ladder games (the references are deterministic): the
    second, given the first's kept games, adds none of them again."""
    run, kept = make_run(tmp_path / "run.sqlite"), tmp_path / "ladder.sqlite"
    league(tmp_path / "first.sqlite", [run], games=2, ladder_file=str(kept))
    second = tmp_path / "second.sqlite"
    league(second, [run], games=2)  # its own ladder, the same games
    assert sorted(read(second, LADDER)) == sorted(kept_games(kept))
    league(second, [], games=2, ladder_file=str(kept))
    assert sorted(read(second, LADDER)) == sorted(kept_games(kept))  # not twice
    with sqlite3.connect(kept) as c:  # and the second's own were one trial with the first's: kept once
        assert c.execute("SELECT COUNT(*) FROM games").fetchone()[0] == 2


def test_an_older_league_file_is_migrated_with_its_pairs_as_integers(tmp_path):
    """A league file of schema 1, whose pair numbers were numpy int64s that sqlite3 stored as
    blobs, opens with them as the integers they were."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as c:
        c.executescript(db.MIGRATIONS[0])
        c.execute("PRAGMA user_version = 1")
        c.execute("INSERT INTO matches (sims, opponent_sims, first_opening, pairs, started_at) VALUES (16, 4, 0, 1, 0)")
        for pair in (3, 300, 70_000):
            c.execute(
                "INSERT INTO games (match_id, pair, moves, winner, candidate_colour, created_at)"
                " VALUES (1, ?, 'a1', 1, 1, 0)",
                (np.int64(pair),),
            )
    assert {t for (t,) in read(path, "SELECT typeof(pair) FROM games")} == {"blob"}
    db.open_league(path).close()
    assert read(path, "SELECT typeof(pair), pair FROM games ORDER BY id") == [
        ("integer", 3),
        ("integer", 300),
        ("integer", 70_000),
    ]
