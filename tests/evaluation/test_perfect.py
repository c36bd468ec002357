"""The exact solver (native/solver.py) and `hexzd perfect`.

The solver is checked against tests/solver.py, a brute force in plain Python
that shares no code with it, and against the symmetries of Hex on boards too
large for the brute force.
"""

import gc
import hashlib
import json
import sqlite3

import numpy as np
import pytest
import solver as reference
from click.testing import CliRunner
from states import add_model

from hexzd import store
from hexzd.cli import main
from hexzd.evaluation.perfect import MAX_EMPTY, MAX_SIZE, Solver, first_ply, positions_from_games, undecided_positions
from hexzd.game.notation import cell_name
from hexzd.game.rules import BLACK, EMPTY, WHITE


def reachable(n):
    """Every undecided position of a game from the empty n x n board: (cells, to_play)."""
    found, frontier = {}, [(tuple([EMPTY] * (n * n)), BLACK)]
    while frontier:
        cells, to_play = frontier.pop()
        if cells in found or reference.winner(cells, n):
            continue
        found[cells] = to_play
        for x in range(n * n):
            if cells[x] == EMPTY:
                frontier.append((cells[:x] + (to_play,) + cells[x + 1 :], 3 - to_play))
    return list(found.items())


def random_positions(n, count, stones, seed):
    """Undecided positions of random openings with stones[0] .. stones[1] stones."""
    rng, out = np.random.default_rng(seed), []
    while len(out) < count:
        line = rng.permutation(n * n)[: rng.integers(stones[0], stones[1] + 1)]
        cells = [EMPTY] * (n * n)
        for ply, x in enumerate(line):
            cells[x] = BLACK if ply % 2 == 0 else WHITE
        if not reference.winner(tuple(cells), n):
            out.append((tuple(cells), reference.to_play_of(cells)))
    return out


def agree(solver, n, positions):
    """The solver's wins, winning moves and reply against the brute force's."""
    for cells, to_play in positions:
        good = reference.winning_moves(cells, n, to_play)
        board = np.array(cells, np.int8)
        assert solver.wins(board, to_play) == bool(good), cells
        assert list(np.flatnonzero(solver.winning_moves(board, to_play))) == good, cells
        move = solver.reply(board, to_play)
        assert cells[move] == EMPTY and (move in good or not good), cells
        threats = [
            x
            for x in range(n * n)
            if cells[x] == EMPTY and reference.connected(cells[:x] + (3 - to_play,) + cells[x + 1 :], n, 3 - to_play)
        ]
        assert good or move in threats or not threats, cells  # a lost defence blocks a threat


def test_every_reachable_3x3_position_agrees_with_the_brute_force():
    positions = reachable(3)
    assert len(positions) > 1000
    agree(Solver(3, table_bits=12), 3, positions)


def test_random_4x4_positions_agree_with_the_brute_force():
    # A small table, so that replacements happen and a stale entry would show.
    agree(Solver(4, table_bits=10), 4, random_positions(4, 300, (5, 14), seed=1))


def test_late_5x5_positions_agree_with_the_brute_force():
    # Bridges and edge templates come up far more on 5x5 than on 4x4.
    agree(Solver(5, table_bits=16), 5, random_positions(5, 40, (15, 22), seed=2))


def test_the_empty_4x4_board_is_won_on_the_short_diagonal_only():
    # The brute force's answer (test_the_empty_4x4_board_as_the_brute_force_solves_it).
    moves = Solver(4).winning_moves(np.zeros(16, np.int8), BLACK)
    assert list(np.flatnonzero(moves)) == [3, 6, 9, 12]


@pytest.mark.slow
def test_the_empty_4x4_board_as_the_brute_force_solves_it():
    assert reference.winning_moves((EMPTY,) * 16, 4, BLACK) == [3, 6, 9, 12]
    agree(Solver(4), 4, random_positions(4, 60, (1, 4), seed=3))


def turned(board):
    return board[::-1].copy()


def transposed(board, n):
    """The mirror in the long diagonal with the colours swapped: the same game for the other player."""
    out = board.reshape(n, n).T.reshape(-1).copy()
    out[board.reshape(n, n).T.reshape(-1) == BLACK] = WHITE
    out[board.reshape(n, n).T.reshape(-1) == WHITE] = BLACK
    return out


def test_5x5_results_keep_the_symmetries_of_hex():
    n, solver = 5, Solver(5, table_bits=18)
    for cells, to_play in random_positions(n, 30, (3, 12), seed=4):
        board = np.array(cells, np.int8)
        moves = solver.winning_moves(board, to_play)
        assert solver.wins(board, to_play) == moves.any()
        assert (solver.winning_moves(turned(board), to_play) == moves[::-1]).all()
        other = WHITE if to_play == BLACK else BLACK
        swapped = solver.winning_moves(transposed(board, n), other)
        assert (swapped == moves.reshape(n, n).T.reshape(-1)).all()
        assert Solver(5, table_bits=8).wins(board, to_play) == moves.any()  # a table all but empty


def test_the_empty_5x5_board_is_won_in_the_centre():
    solver = Solver(5)
    board = np.zeros(25, np.int8)
    assert solver.wins(board, BLACK) and solver.reply(board, BLACK) == 12
    assert solver.nodes < 5_000_000


def test_the_solver_checks_its_input():
    solver = Solver(3, table_bits=8)
    with pytest.raises(ValueError, match="the game is over"):
        solver.wins(np.array([1, 0, 0, 1, 0, 0, 1, 0, 0], np.int8), WHITE)
    with pytest.raises(ValueError, match="shape"):
        solver.wins(np.zeros(16, np.int8), BLACK)
    with pytest.raises(ValueError, match="to_play"):
        solver.wins(np.zeros(9, np.int8), 3)
    with pytest.raises(ValueError, match="occupied"):
        solver.keeps_win(np.array([1, 0, 0, 0, 0, 0, 0, 0, 0], np.int8), WHITE, 0)
    with pytest.raises(ValueError, match="2x2 to 7x7"):
        Solver(8)


def test_openings_are_distinct_undecided_and_reproducible():
    solver = Solver(4, table_bits=8)
    games = undecided_positions(solver, 50, seed=7)
    assert games.batch == 50 and not games.done.any() and not games.board[0].any()
    assert len({g.tobytes() for g in games.board}) == 50
    assert games.ply.max() <= 14
    assert (undecided_positions(solver, 50, seed=7).board == games.board).all()
    assert len(undecided_positions(Solver(2, table_bits=8), 50, seed=0).board) < 50  # 2x2 has fewer


def test_above_5x5_the_positions_are_late_ones():
    assert first_ply(5) == 0 and first_ply(7) == 49 - MAX_EMPTY
    solver = Solver(7, table_bits=8)
    games = undecided_positions(solver, 40, seed=3, first=first_ply(7))
    stones = (games.board != EMPTY).sum(axis=1)
    assert games.batch == 40 and stones.min() >= first_ply(7) and stones.max() <= 47 and not games.done.any()
    assert len(set(stones.tolist())) > 5  # lengths spread over the range, not one


# -- hexzd perfect ---------------------------------------------------------------------


def perfect(*args):
    result = CliRunner().invoke(main, ["perfect", *args])
    return result


def test_rollouts_strong_and_weak_through_the_cli():
    result = perfect(
        "--random-rollouts", "--size", "4", "--sims", "0,2", "--sims", "3000", "--positions", "60", "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["board_size"] == 4 and report["positions"] == 60 and report["value_sign"] is None
    assert report["won"] + report["lost"] == 60
    rates = {a["name"]: (a["perfect_moves"]["rate"], a["conversion"]["rate"]) for a in report["agents"]}
    assert list(rates) == ["random", "rollouts-2", "rollouts-3000"]
    for name, (moves, conversion) in rates.items():
        assert 0 <= conversion <= moves <= 1, name
    assert rates["rollouts-3000"][0] > 0.9 and rates["rollouts-3000"][1] > 0.9
    for weak in ("random", "rollouts-2"):
        assert rates[weak][1] < rates["rollouts-3000"][1] - 0.3


def replay(names, n):
    """Plain Python: the cells after the moves (Black first), each checked to be legal."""
    cells = [EMPTY] * (n * n)
    for ply, name in enumerate(names.split()):
        x = (int(name[1:]) - 1) * n + "abcdefghijklmnopqrs".index(name[0])
        assert cells[x] == EMPTY and not reference.winner(tuple(cells), n)
        cells[x] = BLACK if ply % 2 == 0 else WHITE
    return tuple(cells)


def test_every_first_move_played_out_against_perfect_defence():
    """3x3, checked move by move with the brute force: the side each opening leaves won,
    the converted games won, and each slip a move that threw a won position away."""
    n = 3
    result = perfect("--random-rollouts", "--size", "3", "--openings", "--sims", "0,500", "--json")
    assert result.exit_code == 0, result.output
    agents = {a["agent"]: a for a in json.loads(result.output)["agents"]}
    assert list(agents) == ["random", "rollouts-500"]
    slips = 0
    for agent in agents.values():
        games = agent["games"]
        assert [g["opening"] for g in games] == [f"{c}{r}" for r in range(1, 4) for c in "abc"]
        for g in games:
            first = replay(g["opening"], n)
            me = WHITE if reference.wins(first, n, WHITE) else BLACK
            assert g["colour"] == ("white" if me == WHITE else "black")
            cells = replay(g["moves"], n)
            if g["converted"]:
                assert g["slip"] is None and reference.connected(cells, n, me)
            else:
                slips += 1
                before = replay(" ".join(g["moves"].split()[:-1]), n)
                assert g["moves"].split()[-1] == g["slip"] and reference.to_play_of(before) == me
                assert reference.wins(before, n, me) and not reference.winner(cells, n)
                assert reference.wins(cells, n, 3 - me)
        assert agent["converted"]["hits"] == sum(g["converted"] for g in games)
        assert agent["black"]["total"] + agent["white"]["total"] == 9
    assert agents["rollouts-500"]["converted"]["hits"] == 9
    assert slips > 0  # the random agent threw some away: the slips above were checked


def test_the_4x4_openings_are_won_for_black_on_the_short_diagonal_only():
    result = perfect("--random-rollouts", "--size", "4", "--openings", "--sims", "2")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("rollouts-2 "))
    words = row.split()  # agent, k/16, rate, [lo, hi], as Black k/4, as White k/12, seconds
    assert words[1].endswith("/16") and words[5].endswith("/4") and words[6].endswith("/12")
    report = json.loads(perfect("--random-rollouts", "--size", "4", "--openings", "--sims", "2", "--json").output)
    black = [g["opening"] for g in report["agents"][0]["games"] if g["colour"] == "black"]
    assert black == ["d1", "c2", "b3", "a4"]  # cells 3, 6, 9, 12: the brute force's answer above


def test_7x7_late_positions_from_the_command_line():
    result = perfect("--random-rollouts", "--size", "7", "--sims", "0", "--positions", "8", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["first_ply"] == first_ply(7) and report["won"] + report["lost"] == report["positions"] == 8
    [random] = report["agents"]
    assert random["conversion"]["total"] == report["won"] > 0


def test_positions_from_recorded_games_as_the_brute_force_sees_them(tmp_path):
    """4x4 games, some too short, some repeating another's start, some already won at the ply:
    one position per distinct undecided start, each won for the player to move (where the start
    was lost for the mover, after one move of the mover's), as the brute force says."""
    n, ply, rng = 4, 8, np.random.default_rng(5)
    lines = [list(rng.permutation(16)[: rng.integers(4, 15)]) for _ in range(60)]
    lines += [lines[0][:ply] + [c for c in range(16) if c not in lines[0][:ply]]]  # lines[0]'s start again
    lines += [[0, 1, 4, 2, 8, 3, 12, 5, 6, 7]]  # Black joins a1 to a4 at ply 7
    starts = {}
    for line in lines:
        cells = [EMPTY] * 16
        for i, a in enumerate(line[:ply]):
            cells[a] = BLACK if i % 2 == 0 else WHITE
        if len(line) > ply and not reference.winner(tuple(cells), n):
            starts[tuple(cells)] = reference.wins(tuple(cells), n, BLACK)  # Black moves after 8 plies
    games, replied = positions_from_games(Solver(n), lines, ply)
    assert games.batch == len(starts) and replied == sum(not w for w in starts.values())
    for board, to_play in zip(games.board, games.to_play):
        cells = tuple(int(c) for c in board)
        assert reference.wins(cells, n, int(to_play)) and not reference.winner(cells, n)
        start = next(s for s in starts if all(a in (EMPTY, b) for a, b in zip(s, cells)))
        assert sum(a != b for a, b in zip(start, cells)) == (0 if starts[start] else 1)
    record = tmp_path / "games.jsonl"
    record.write_text("".join(json.dumps({"moves": "".join(cell_name(a, n) for a in line)}) + "\n" for line in lines))
    result = perfect(
        "--random-rollouts", "--size", "4", "--from-games", str(record), "--ply", "8", "--sims", "0", "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["positions"] == report["won"] == len(starts) and report["replied"] == replied
    [random] = report["agents"]
    assert report["first_ply"] == ply and random["conversion"]["total"] == len(starts)
    # Where the random mover lost the win: one ply each, at the position's first move or later.
    lost = random["conversion"]["total"] - random["conversion"]["hits"]
    assert len(random["slip_plies"]) == lost > 0 and all(p >= ply for p in random["slip_plies"])
    record.write_text('{"moves": "a1b2"}\n{"moves": "a1z9"}\n')
    result = perfect("--random-rollouts", "--size", "4", "--from-games", str(record))
    assert result.exit_code != 0 and "line 2: not a 4x4 game record" in result.output
    result = perfect("--random-rollouts", "--size", "7", "--from-games", str(record), "--ply", "5")
    assert result.exit_code != 0 and f"at least {first_ply(7)} plies" in result.output


def test_proved_positions_kept_in_a_file_are_not_searched_again(tmp_path):
    """Two judges of the same 4x4 positions share a file: the second searches nothing and says
    the same, every answer in the file is the brute force's, and a wrong file is refused."""
    rng = np.random.default_rng(8)
    lines = [list(rng.permutation(16)[:12]) for _ in range(30)]
    record, solved = tmp_path / "games.jsonl", tmp_path / "solved.json"
    record.write_text("".join(json.dumps({"moves": "".join(cell_name(a, 4) for a in line)}) + "\n" for line in lines))
    args = ["--random-rollouts", "--size", "4", "--from-games", str(record), "--ply", "6", "--sims", "0,8", "--json"]
    first, again = (json.loads(perfect(*args, "--solved", str(solved)).output) for _ in range(2))
    assert first["solver_nodes"] > 0 and again["solver_nodes"] == 0
    assert again["agents"] == [{**a, "seconds": b["seconds"]} for a, b in zip(first["agents"], again["agents"])]
    saved = json.loads(solved.read_text())
    assert saved["board_size"] == 4 and len(saved["answers"]) > first["positions"]
    for question, board, to_play, value in saved["answers"]:
        cells = tuple(int(c) for c in board)
        if question == "wins":
            assert value == reference.wins(cells, 4, to_play), board
        else:  # the perfect player's move: a winning one wherever there is one
            good = reference.winning_moves(cells, 4, to_play)
            assert cells[value] == EMPTY and (value in good or not good), board
    result = perfect("--random-rollouts", "--size", "5", "--sims", "0", "--positions", "4", "--solved", str(solved))
    assert result.exit_code != 0 and "holds solved 4x4 positions, not 5x5" in result.output
    solved.write_text('{"answers": 3}')
    result = perfect(*args, "--solved", str(solved))
    assert result.exit_code != 0 and "not a file of solved positions" in result.output
    result = perfect(*args, "--solved", str(tmp_path / "gone" / "solved.json"))  # cannot be written
    assert result.exit_code == 0 and json.loads(result.stdout)["agents"][0]["name"] == first["agents"][0]["name"]
    assert "were not saved" in result.stderr


def test_the_table_and_its_refusals():
    result = perfect("--random-rollouts", "--size", "3", "--sims", "0,50", "--positions", "20")
    assert result.exit_code == 0, result.output
    assert "perfect-move rate" in result.output and "rollouts-50" in result.output
    result = perfect("--random-rollouts", "--size", "8")
    assert result.exit_code != 0 and "late positions up to 7x7" in result.output
    result = perfect("--random-rollouts", "--size", "6", "--openings")
    assert result.exit_code != 0 and f"up to {MAX_SIZE}x{MAX_SIZE}" in result.output
    result = perfect("--random-rollouts", "--sims", "-3")
    assert result.exit_code != 0 and "0 (no search) or more" in result.output


def digest(path):
    """The file's hash once every earlier write is in it, not in its WAL."""
    gc.collect()  # add_model's connection, left open by its `with`, closes and checkpoints
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_state_file_model(tmp_path):
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    add_model(db, board_size=4)
    before = digest(db)
    result = perfect("--db", str(db), "--model", "best", "--sims", "0,8", "--positions", "30", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["board_size"] == 4 and 0 <= report["value_sign"]["rate"] <= 1
    assert [a["name"] for a in report["agents"]] == ["net-0", "net-8"]
    assert all(0 <= a["perfect_moves"]["rate"] <= 1 for a in report["agents"])
    assert digest(db) == before  # read, never written
    result = perfect("--db", str(db), "--size", "5")
    assert result.exit_code != 0 and "model 1 plays 4x4, not 5x5" in result.output


def test_a_state_file_without_a_promoted_model(tmp_path):
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    add_model(db, board_size=4, promoted=False)
    result = perfect("--db", str(db))
    assert result.exit_code != 0 and "no model of" in result.output and "--random-rollouts" in result.output
    result = perfect("--db", str(tmp_path / "missing.sqlite"))
    assert result.exit_code != 0 and "no state file" in result.output
