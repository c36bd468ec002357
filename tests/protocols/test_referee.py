"""`hexzd match`, the HTP referee, against engines that are not hexzd.

The referee's verdicts are checked by replaying every recorded game in
OpenSpiel's `hex`; its forfeits by engines built to misbehave.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hexzd import __version__

pytestmark = pytest.mark.e2e  # daemons and processes: `pytest -m e2e`

pyspiel = pytest.importorskip("pyspiel")

HERE = Path(__file__).parent.parent  # tests/, where the helpers are
OPENSPIEL = f"{sys.executable} {HERE / 'openspiel_htp.py'}"
HEXZD = f"{sys.executable} -m hexzd htp --random-rollouts"


def match(tmp_path, a, b, *options):
    record = tmp_path / "games.jsonl"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "hexzd",
            "match",
            a,
            b,
            "--record",
            str(record),
            "--log-dir",
            str(tmp_path),
            "--json",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr
    games = [json.loads(line) for line in record.read_text().splitlines()]
    return json.loads(run.stdout), games


def openspiel_winner(moves: str, n: int) -> tuple[str, bool]:
    """("black" or "white", terminal?) after replaying a trmph string in OpenSpiel."""
    state = pyspiel.load_game("hex", {"board_size": n}).new_initial_state()
    cells, i = [], 0
    while i < len(moves):
        j = i + 1
        while j < len(moves) and moves[j].isdigit():
            j += 1
        cells.append(moves[i:j])
        i = j
    for cell in cells:
        action = (int(cell[1:]) - 1) * n + ord(cell[0]) - ord("a")
        assert action in state.legal_actions(), f"{cell} is illegal in {moves}"
        state.apply_action(action)
    if not state.is_terminal():
        return "", False
    return ("black" if state.returns()[0] > 0 else "white"), True


def test_referee_verdicts_agree_with_openspiel_and_the_stronger_engine_wins(tmp_path):
    result, games = match(tmp_path, f"{OPENSPIEL} --sims 3000", f"{HEXZD} --sims 4", "--size", "5", "--games", "6")
    assert result["games"] == len(games) == 6
    assert [g["black"] for g in games] == ["A", "B"] * 3  # each opening with both colours
    assert games[0]["opening"] == games[1]["opening"] != games[2]["opening"]
    for g in games:
        assert g["reason"] == "connected" and g["moves"].startswith(g["opening"])
        colour, over = openspiel_winner(g["moves"], 5)
        assert over, g
        assert g["winner"] == ("A" if (colour == "black") == (g["black"] == "A") else "B"), g
    assert result["a_wins"] >= 5, result  # OpenSpiel's MCTS with 3,000 rollouts against 4
    assert result["a_wins"] == result["a_wins_as_black"] + result["a_wins_as_white"]
    assert result["score_lo"] <= result["score"] <= result["score_hi"]


MISBEHAVING = {
    # plays a1 whatever the board: illegal the second time, or at once if a1 is taken
    "illegal": "print('= a1' if line.startswith('genmove') else '= ', end='\\n\\n', flush=True)",
    # never answers genmove
    "silent": "print('= ', end='\\n\\n', flush=True) if not line.startswith('genmove') else time.sleep(60)",
    # dies when asked to move
    "crash": "sys.exit(3) if line.startswith('genmove') else print('= ', end='\\n\\n', flush=True)",
    "resign": "print('= resign' if line.startswith('genmove') else '= ', end='\\n\\n', flush=True)",
    # floods its answer to genmove, with no blank line to end it
    "flood": "print('= a1\\n' * 5000 if line.startswith('genmove') else '= ', end='' if line.startswith('genmove')"
    " else '\\n\\n', flush=True)",
    # closes its output when asked to move, and lives on
    "mute": "(os.close(1), time.sleep(60)) if line.startswith('genmove') else print('= ', end='\\n\\n', flush=True)",
}


@pytest.mark.parametrize(
    "kind,reason",
    [
        ("illegal", "B illegal move"),
        ("silent", "B no answer"),
        ("crash", "B the engine exited"),
        ("resign", "B resigned"),
        ("flood", "B more than 1000 lines and no blank line in the answer to `genmove"),
        ("mute", "B the engine closed its output during `genmove"),
    ],
)
def test_an_engine_that_misbehaves_loses_and_the_match_goes_on(tmp_path, kind, reason):
    script = tmp_path / f"{kind}.py"
    script.write_text(f"import os, sys, time\nfor line in sys.stdin:\n    {MISBEHAVING[kind]}\n")
    result, games = match(
        tmp_path, f"{HEXZD} --sims 8", f"{sys.executable} {script}", "--size", "4", "--games", "2", "--timeout", "2"
    )
    lost = {"A": 0, "B": 2}
    assert result["a_wins"] == 2
    assert (result["resigned"], result["forfeits"]) == (
        (lost, {"A": 0, "B": 0}) if kind == "resign" else ({"A": 0, "B": 0}, lost)
    )
    assert all(g["reason"].startswith(reason) for g in games), [g["reason"] for g in games]


def test_a_command_that_cannot_start_is_a_clear_error(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "hexzd", "match", "no-such-engine-xyz", HEXZD, "--games", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 1 and "cannot start an engine" in run.stderr


def state_file_3x3(tmp_path: Path) -> Path:
    """A run's state file as the daemon leaves it: made with a 3x3 config, one model promoted."""
    import sqlite3

    from states import add_model

    from hexzd import store
    from hexzd.config import Config

    db = tmp_path / "run.sqlite"
    store.prepare(db)
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO meta VALUES ('config', ?)", (Config(game={"board_size": 3}).model_dump_json(),))
    add_model(db, board_size=3)
    return db


def hexzd_match(tmp_path: Path, a: str, b: str, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "hexzd", "match", a, b, "--log-dir", str(tmp_path), *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)


def test_match_plays_the_state_files_board_names_the_engines_and_scores_each_colour(tmp_path):
    db = state_file_3x3(tmp_path)
    a, b = f"{sys.executable} -m hexzd htp --db {db} --sims 4 --no-resign", f"{OPENSPIEL} --sims 20"
    run = hexzd_match(tmp_path, a, b, "--games", "4", "--record", str(tmp_path / "games.jsonl"))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    # `name` and `version` as each engine answers them (hexzd.protocols.htp, openspiel_htp): on 3x3
    # the state file's network plays.
    assert lines[:2] == [
        f"A hexzd {__version__} model 1 (1x8 network), 4 simulations per move  [{a}]",
        f"B openspiel-mcts 20 simulations  [{b}]",
    ]
    games = [json.loads(line) for line in (tmp_path / "games.jsonl").read_text().splitlines()]
    won = {"black": [0, 0], "white": [0, 0]}  # A's [wins, losses] with each colour, from OpenSpiel's replays
    for g in games:
        winner, over = openspiel_winner(g["moves"], 3)
        assert over
        a_colour = "black" if g["black"] == "A" else "white"
        won[a_colour][winner != a_colour] += 1
    plural = lambda k, word, many: f"{k} {word if k == 1 else many}"  # noqa: E731
    assert next(line for line in lines if line.startswith("A as Black")) == "; ".join(
        f"A as {c.capitalize()}: {plural(w, 'win', 'wins')}, {plural(lost, 'loss', 'losses')}"
        for c, (w, lost) in won.items()
    )


def test_match_refuses_a_board_the_network_was_not_trained_on_unless_asked(tmp_path):
    db = state_file_3x3(tmp_path)
    a = f"{sys.executable} -m hexzd htp --db {db} --sims 4"
    refused = hexzd_match(tmp_path, a, f"{OPENSPIEL} --sims 20", "--size", "4", "--games", "2")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        "Error: engine A's network was trained on 3x3, not 4x4, where `hexzd htp` plays random-rollout MCTS:"
        " --size 3, or --any-size to play 4x4 anyway\n"
    )
    assert not (tmp_path / "engine-A.log").exists()  # no engine was started
    played = hexzd_match(tmp_path, a, f"{OPENSPIEL} --sims 20", "--size", "4", "--any-size", "--games", "2", "--json")
    result = json.loads(played.stdout)
    assert (result["size"], result["games"]) == (4, 2)
    assert result["names"]["A"] == (
        f"hexzd random-rollouts {__version__} random-rollout MCTS (model 1 plays 3x3, not 4x4), 4 simulations per move"
    )
    assert result["names"]["B"] == "openspiel-mcts 20 simulations"
