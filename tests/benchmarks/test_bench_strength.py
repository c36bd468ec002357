"""`hexzd bench strength` end to end: a real run from scratch, judged against the exact solver."""

import json
import os

import numpy as np
import pytest
import solver as reference
from click.testing import CliRunner
from states import add_model

from hexzd import store
from hexzd.benchmarks import strength
from hexzd.benchmarks.strength import spread
from hexzd.cli import main
from hexzd.config import stored
from hexzd.evaluation.perfect import GAMES_EMPTY
from hexzd.game.notation import cell_name
from hexzd.store import reads

pytestmark = pytest.mark.e2e  # daemons and processes: `pytest -m e2e`


@pytest.mark.timeout(240)
def test_a_short_3x3_run_is_trained_and_judged_against_perfect_play(tmp_path):
    config = tmp_path / "variant.toml"  # --config: every key but the board size and the seed holds
    config.write_text("[game]\nboard_size = 9\n[model]\nblocks = 2\nchannels = 16\n[train]\nseed = 7\n")
    result = CliRunner().invoke(
        main,
        ["bench", "strength", "--size", "3", "--minutes", "0.6", "--out", str(tmp_path), "--config", config, "--json"],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    [run] = out["runs"]
    assert out["size"] == 3 and run["games"] > 0 and (tmp_path / "3x3-seed0.sqlite").exists()
    with store.read_only(tmp_path / "3x3-seed0.sqlite") as connection:
        used = stored(reads.config_text(connection))
    assert (used.game.board_size, used.train.seed, used.model.blocks, used.model.channels) == (3, 0, 2, 16)
    assert run["promoted"] >= 1, "a 3x3 network beats rollouts within 36 s"
    # Every promoted snapshot is judged on the 9 openings (hexzd perfect --openings, which
    # tests/evaluation/test_perfect.py checks move by move against the plain-Python brute force).
    for point in run["curve"]:
        assert point["of"] == 9 and 0 <= point["converted"] <= 9
        assert point["minutes"] <= 0.6 + 0.2 and point["pflop"] >= 0
        # Every process's CPU time, rollouts included: some, and no more than the cores allow.
        assert 0 < point["cpu_hours"] * 60 <= point["minutes"] * os.cpu_count() * 1.1 + 0.1
    assert [p["model"] for p in run["curve"]] == sorted(p["model"] for p in run["curve"])
    reached = run["milestone"]
    assert reached is None or reached["model"] in [p["model"] for p in run["curve"] if p["converted"] == 9]
    assert out["milestone_reached"] == (reached is not None)

    # --rejudge judges the run already there again, and trains nothing.
    rejudge = ["bench", "strength", "--size", "3", "--out", str(tmp_path), "--rejudge", "--json"]
    again = CliRunner().invoke(main, rejudge)
    assert again.exit_code == 0, again.output
    [rerun] = json.loads(again.stdout.strip().splitlines()[-1])["runs"]
    assert json.loads(again.stdout.strip().splitlines()[-1])["minutes"] is None
    assert rerun["games"] == run["games"] and [p["model"] for p in rerun["curve"]] == [p["model"] for p in run["curve"]]


def test_rejudge_needs_a_run_to_judge(tmp_path):
    result = CliRunner().invoke(main, ["bench", "strength", "--size", "7", "--out", str(tmp_path), "--rejudge"])
    assert result.exit_code == 1 and "nothing to rejudge" in result.output


def test_the_curve_takes_the_last_snapshot_of_each_part_of_the_run():
    made = [{"model_id": i, "wall_seconds": t} for i, t in [(1, 10), (2, 20), (3, 45), (4, 50), (5, 95), (6, 100)]]
    # Quarters of 100 s end at 25, 50, 75 and 100: the last made by then are 2, 4, 4 (again) and 6.
    assert [s["model_id"] for s in spread(made, 4)] == [2, 4, 6]
    assert [s["model_id"] for s in spread(made, 1)] == [6]
    assert [s["model_id"] for s in spread(made, 100)] == [1, 2, 3, 4, 5, 6]


def test_a_bad_config_is_refused_before_anything_runs(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[selfplay]\nsims = 0\n")
    result = CliRunner().invoke(main, ["bench", "strength", "--size", "3", "--out", str(tmp_path), "--config", config])
    assert result.exit_code == 1 and "bad.toml:2: selfplay.sims" in result.output
    assert not list(tmp_path.glob("*.sqlite"))


def test_the_mcts_judge_plays_at_the_simulations_asked(tmp_path, monkeypatch):
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    model = add_model(db, 3)
    monkeypatch.setattr(strength, "SIMS", 8)
    judged = strength._match(db, model, 3, judge_sims=50)
    assert judged["judge"] == "openspiel-mcts 50 simulations"  # as the judge's own engine names itself
    assert judged["games"] == 18 and judged["score_lo"] <= judged["score"] <= judged["score_hi"]
    assert "against openspiel-mcts 50 simulations (" in strength._score(judged)


def test_the_positions_judge_converts_each_recorded_games_late_position(tmp_path, monkeypatch):
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    model = add_model(db, 7)
    monkeypatch.setattr(strength, "SIMS", 8)
    rng, ply = np.random.default_rng(3), 49 - GAMES_EMPTY
    lines = [[cell_name(int(a), 7) for a in rng.permutation(49)[: ply + 6]] for _ in range(3)]
    lines.append(lines[0][: ply + 1])  # the same position after the ply: counted once
    lines.append(lines[1][:ply])  # over before the ply: not counted
    record = tmp_path / "strong.jsonl"
    record.write_text("".join(json.dumps({"moves": "".join(line)}) + "\n" for line in lines))
    judged = strength._positions(db, model, 7, str(record))
    assert (tmp_path / "7x7-solved.json").exists()  # the proofs, for the next snapshot judged
    # Random openings can already be won at the ply (they are dropped); most are not.
    undecided = sum(reference.winner(replayed(line[:ply]), 7) == 0 for line in lines[:3])
    assert judged["positions"] == undecided > 0 and 0 <= judged["positions_converted"] <= undecided
    score = {"wins": 1, "games": 2, "judge": "x", "score": 0.5, "score_lo": 0.1, "score_hi": 0.9, **judged}
    assert f"{judged['positions_converted']}/{undecided} positions converted" in strength._score(score)
    result = CliRunner().invoke(
        main, ["bench", "strength", "--size", "9", "--out", str(tmp_path), "--judge-games", record]
    )
    assert result.exit_code == 1 and "for 6x6 and 7x7 boards, not 9x9" in result.output


def replayed(names: list[str]) -> tuple:
    """Plain Python: the cells after these moves, Black first."""
    cells = [0] * 49
    for ply, name in enumerate(names):
        cells[(int(name[1:]) - 1) * 7 + "abcdefg".index(name[0])] = 1 if ply % 2 == 0 else 2
    return tuple(cells)
