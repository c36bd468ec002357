"""`hexzd match`, the HTP referee, against engines that are not hexzd.

The referee's verdicts are checked by replaying every recorded game in
OpenSpiel's `hex`; its forfeits by engines built to misbehave.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
