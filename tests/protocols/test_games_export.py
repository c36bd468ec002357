"""`hexzd games`: a run's games as SGF and trmph lines, read back by outside readers.

The games are real: a real run's state file (tests/data, 4x4, no swap), and
games played here by hexzd's own self-play and match code on a 4x4 board with
the swap rule, and against an outside engine that resigns. They are exported
through the command line; the SGF is parsed by sgfmill's game-independent
grammar, the trmph lines by a regex here. Every game is replayed in OpenSpiel's
`hex` twice, from the state file's moves (with OpenSpiel's swap) and from the
exported ones as HexGui replays them (`swap-pieces` keeps the stone, White
moves again): each move legal, the winner the one RE names, as many moves as
the state file holds, and the two final boards mirror images of each other
where the swap was played.
"""

import gzip
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from typing import NamedTuple

import numpy as np
import pytest
from click.testing import CliRunner
from states import play_stored

from hexzd import store
from hexzd.cli import main
from hexzd.config import Config, SelfplayConfig
from hexzd.train.selfplay import SelfPlay

pyspiel = pytest.importorskip("pyspiel")
sgf_grammar = pytest.importorskip("sgfmill.sgf_grammar")

RUN = "tests/data/run-2026-12-04.sqlite.gz"  # a real run: 4x4, no swap, promotion duels and rating matches
N = 4
MOVE = re.compile(r"swap|[a-s][0-9]{1,2}")  # the state file's moves: trmph form, hexzd's `swap`
TRMPH_LINE = re.compile(r"http://www\.trmph\.com/hex/board#([0-9]+),((?:[a-s][0-9]{1,2})*)")
BLACK_CELLS, WHITE_CELLS = set("xyzX"), set("opqO")  # OpenSpiel's hex board string, edges and wins marked


# -- the references: OpenSpiel's hex, and the state file read with plain SQL -----------------


def action(cell: str, n: int) -> int:
    """OpenSpiel's hex action of a cell: row * n + column, column `a`, row 1 at the top."""
    return (int(cell[1:]) - 1) * n + ord(cell[0]) - ord("a")


def board(state, n: int) -> np.ndarray:
    """OpenSpiel's board: 1 Black, 2 White, 0 empty, row by row."""
    text = str(state).replace(" ", "").replace("\n", "")
    return np.array([1 if ch in BLACK_CELLS else 2 if ch in WHITE_CELLS else 0 for ch in text[: n * n]])


def stored_game(moves: str, n: int):
    """The state file's moves replayed by OpenSpiel, with its swap (the transposed cell): (state, moves)."""
    cells = MOVE.findall(moves)
    assert "".join(cells) == moves
    state = pyspiel.load_game("hex", {"board_size": n, "swap": "swap" in cells}).new_initial_state()
    for cell in cells:
        a = n * n if cell == "swap" else action(cell, n)
        assert a in state.legal_actions(), moves
        state.apply_action(a)
    return state, cells


def hexgui_game(moves: list[tuple[str, str]], n: int):
    """The exported (colour, cell) moves replayed as HexGui does, in OpenSpiel without swap:
    `swap-pieces` changes no stone and White moves again, so once it is dropped the colours
    alternate from Black. Returns the final state; asserts every move legal and in turn."""
    state = pyspiel.load_game("hex", {"board_size": n}).new_initial_state()
    for ply, (colour, cell) in enumerate(moves):
        if cell == "swap-pieces":
            assert (ply, colour) == (1, "W")
            continue
        assert state.current_player() == "BW".index(colour), moves
        assert action(cell, n) in state.legal_actions(), moves
        state.apply_action(action(cell, n))
    return state


def winner_of(state) -> str | None:
    return None if not state.is_terminal() else "B" if state.returns()[0] > 0 else "W"


def mirrored(cells: np.ndarray, n: int) -> np.ndarray:
    """The board mirrored in the long diagonal, colours exchanged: HexGui's view after a swap."""
    flipped = cells.reshape(n, n).T.reshape(-1)
    return np.where(flipped == 0, 0, 3 - flipped)


def rows(db, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute(sql).fetchall()


def name(model_id, sims, engine=None) -> str:
    if engine == "perfect":
        return "perfect"
    return f"engine {engine}" if engine else f"rollouts @{sims}" if model_id is None else f"model {model_id} @{sims}"


class Truth(NamedTuple):
    """A game as the state file holds it."""

    moves: str  # trmph form, hexzd's `swap`
    winner: int  # 1 Black, 2 White
    length: int
    black: str  # the players' names, as `hexzd ratings` gives them
    white: str
    at: float


def expected(db) -> dict[str, Truth]:
    """Every game of the state file by its exported name: moves, winner, players, date."""
    out = {}
    for id_, model_id, sims, moves, winner, length, at in rows(
        db, "SELECT id, model_id, sims, moves, winner, length, created_at FROM games"
    ):
        player = name(model_id, sims)
        out[f"selfplay-{id_}"] = Truth(moves, winner, length, player, player, at)
    for id_, kind, moves, winner, colour, at, cand, sims, opp, opp_sims, engine in rows(
        db,
        "SELECT g.id, d.kind, g.moves, g.winner, g.candidate_colour, g.created_at, d.candidate_id, d.sims,"
        " d.opponent_id, d.opponent_sims, d.opponent_engine FROM duel_games g JOIN duels d ON d.id = g.duel_id",
    ):
        players = [name(cand, sims), name(opp, opp_sims, engine)]
        black, white = players if colour == 1 else players[::-1]
        kind = "duel" if kind == "promotion" else "rating"
        out[f"{kind}-{id_}"] = Truth(moves, winner, len(MOVE.findall(moves)), black, white, at)
    return out


# -- the state files ------------------------------------------------------------------------


def copy_of_run(folder):
    """A copy of a real run's state file, brought to today's schema as its daemon would on its next start."""
    db = folder / "run.sqlite"
    with gzip.open(RUN) as source, open(db, "wb") as copy:
        shutil.copyfileobj(source, copy)
    store.prepare(db)
    return db


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return copy_of_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def swapped(tmp_path_factory):
    """A 4x4 run with the swap rule: self-play games of hexzd's self-play (random-rollout
    MCTS, as before the first network) and a rating match of rollouts @100 against @50."""
    db = tmp_path_factory.mktemp("swap") / "run.sqlite"
    store.prepare(db)
    config = Config.model_validate({"game": {"board_size": N, "swap": True}, "duel": {"pairs": 3}})
    play = SelfPlay(SelfplayConfig(batch=8, groups=1, sims=16), N, swap=True, seed=7)
    finished = []
    while len(finished) < 16:
        finished += [record for record, _, _ in play.move()]
    play.close()
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO meta VALUES ('config', ?)", (config.model_dump_json(),))
        c.executemany(
            "INSERT INTO games (model_id, created_at, board_size, sims, moves, winner, length, policy, evals, worker)"
            " VALUES (NULL, ?, ?, 16, ?, ?, ?, ?, 0, 'selfplay-0')",
            [(time.time(), r.board_size, r.moves, r.winner, len(r.actions), r.policy) for r in finished],
        )
        duel = c.execute(
            "INSERT INTO duels (kind, candidate_id, sims, opponent_id, opponent_sims, pairs, started_at)"
            " VALUES ('rating', NULL, 100, NULL, 50, 3, ?)",
            (time.time(),),
        ).lastrowid
    play_stored(db, duel, config)
    return db


def exported(db, *args) -> str:
    result = CliRunner().invoke(main, ["games", "--db", str(db), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


# -- what HexGui and trmph.com would read ----------------------------------------------------


def parse_sgf(text: str) -> list[dict]:
    """Each game tree of a collection, by sgfmill's grammar: its root properties, and its
    moves as (colour, value); asserts one line of play (no variations)."""
    games = []
    for tree in sgf_grammar.parse_sgf_collection(text.encode()):
        assert not tree.children
        root, *nodes = tree.sequence
        props = {key: sgf_grammar.simpletext_value(values[0]).decode() for key, values in root.items()}
        moves = []
        for node in nodes:
            ((colour, values),) = node.items()
            moves.append((colour, values[0].decode()))
        games.append(props | {"moves": moves})
    return games


def check_sgf(game: dict, truth: Truth) -> bool:
    """One exported game against the state file's row; True if the swap was played."""
    assert (game["FF"], game["GM"], game["SZ"]) == ("4", "11", str(N))
    state, cells = stored_game(truth.moves, N)
    assert len(game["moves"]) == len(cells) == truth.length
    hexgui = hexgui_game(game["moves"], N)
    swap = "swap" in cells
    # HexGui's board after a swap is hexzd's (OpenSpiel's) mirrored, with the colours exchanged.
    assert np.array_equal(board(hexgui, N), mirrored(board(state, N), N) if swap else board(state, N))
    winner = "BW"[truth.winner - 1] if not swap else "WB"[truth.winner - 1]
    resigned = winner_of(state) is None
    assert game["RE"] == f"{winner}+" + ("R" if resigned else "")
    assert winner_of(hexgui) == (None if resigned else winner)
    assert (game["PB"], game["PW"]) == ((truth.white, truth.black) if swap else (truth.black, truth.white))
    assert game["DT"] == time.strftime("%Y-%m-%d", time.gmtime(truth.at))
    return swap


def check_trmph(line: str, truth: Truth) -> None:
    size, cells = TRMPH_LINE.fullmatch(line).groups()
    cells = re.findall(r"[a-s][0-9]{1,2}", cells)
    state, stored = stored_game(truth.moves, N)
    assert int(size) == N and len(cells) == len(stored)
    swap = len(cells) > 1 and cells[1] == cells[0]  # trmph's swap: the first cell again
    assert swap == ("swap" in stored)
    moves = [("BW"[ply % 2], cell) for ply, cell in enumerate(cells)]
    if swap:
        moves = [moves[0], ("W", "swap-pieces")] + [("WB"[ply % 2], cell) for ply, cell in enumerate(cells[2:])]
    hexgui = hexgui_game(moves, N)
    assert np.array_equal(board(hexgui, N), mirrored(board(state, N), N) if swap else board(state, N))
    if winner_of(state) is not None:  # a line has no result: a resigned game's just stops
        assert winner_of(hexgui) == ("BW" if not swap else "WB")[truth.winner - 1]


# -- the tests ---------------------------------------------------------------------------------


def test_every_game_of_a_real_run_replays_in_openspiel_as_the_sgf_says(run):
    truth = expected(run)
    games = parse_sgf(exported(run, "--kind", "all"))
    assert sorted(g["GN"] for g in games) == sorted(truth)  # self-play, duels and rating matches: all of them
    for game in games:
        assert not check_sgf(game, truth[game["GN"]])
    assert {g["EV"] for g in games} >= {"hexzd self-play", "hexzd promotion duel 2", "hexzd rating match 9"}
    assert any(g["PW"] == "perfect" for g in games) and any(g["PB"] == "model 13 @64" for g in games)


def test_games_with_the_swap_open_in_hexgui_mirrored(swapped):
    truth = expected(swapped)
    games = parse_sgf(exported(swapped, "--kind", "all"))
    assert sorted(g["GN"] for g in games) == sorted(truth)
    swaps = [check_sgf(game, truth[game["GN"]]) for game in games]
    assert any(swaps) and not all(swaps)  # both kinds were played, and checked
    assert any(g["GN"].startswith("rating") and s for g, s in zip(games, swaps))  # a match's swap: PB, PW exchanged


@pytest.mark.parametrize("fixture", ["run", "swapped"])
def test_trmph_lines_replay_in_openspiel(fixture, request):
    db = request.getfixturevalue(fixture)
    truth = expected(db)
    lines = exported(db, "--kind", "selfplay", "--format", "trmph").splitlines()
    games = [name for name in truth if name.startswith("selfplay-")]
    assert len(lines) == len(games)
    for line, game in zip(lines, sorted(games, key=lambda g: int(g.split("-")[1]))):
        check_trmph(line, truth[game])


def test_selections_pick_the_games_the_state_file_says(run):
    def names(*args) -> list[str]:
        text = exported(run, *args)
        return [g["GN"] for g in parse_sgf(text)] if text else []

    of_13 = [f"selfplay-{i}" for (i,) in rows(run, "SELECT id FROM games WHERE model_id = 13 ORDER BY id")]
    assert names("--model", "13") == of_13 and len(of_13) == 55
    matches_13 = rows(
        run,
        "SELECT g.id FROM duel_games g JOIN duels d ON d.id = g.duel_id"
        " WHERE d.kind = 'promotion' AND 13 IN (d.candidate_id, d.opponent_id) ORDER BY g.id",
    )
    assert names("--kind", "duel", "--model", "13") == [f"duel-{i}" for (i,) in matches_13] and matches_13
    assert names("--ids", "5..9") == [f"selfplay-{i}" for i in range(5, 10)]
    assert names("--ids", "2620..") == ["selfplay-2620", "selfplay-2621", "selfplay-2622"]
    rating = rows(run, "SELECT g.id FROM duel_games g JOIN duels d ON d.id = g.duel_id WHERE d.kind = 'rating'")
    assert names("--kind", "rating", "--last", "2") == [f"rating-{i}" for (i,) in sorted(rating)[-2:]]
    of_42 = rows(run, "SELECT id FROM games WHERE model_id = 42 AND id <= 2560 ORDER BY id")
    assert names("--model", "42", "--last", "3", "--ids", "..2560") == [f"selfplay-{i}" for (i,) in of_42[-3:]]
    assert len(of_42) > 3 and names("--model", "42", "--ids", "..2000") == []


def test_a_folder_gets_one_file_a_game_and_a_file_all_of_them(run, tmp_path):
    result = CliRunner().invoke(main, ["games", "--db", str(run), "--ids", "1..4", "--out", f"{tmp_path}/each/"])
    assert result.exit_code == 0 and "4 games written" in result.stderr
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == [f"selfplay-{i}.sgf" for i in range(1, 5)]
    assert [len(parse_sgf(p.read_text())) for p in (tmp_path / "each").iterdir()] == [1] * 4
    result = CliRunner().invoke(main, ["games", "--db", str(run), "--kind", "duel", "--out", str(tmp_path / "d.sgf")])
    assert result.exit_code == 0 and len(parse_sgf((tmp_path / "d.sgf").read_text())) == len(
        rows(run, "SELECT 1 FROM duel_games g JOIN duels d ON d.id = g.duel_id WHERE d.kind = 'promotion'")
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "999"], "no model 999 in the state file"),
        (["--kind", "all", "--ids", "3..4"], "--ids needs one --kind"),
        (["--ids", "9..5"], "holds no id"),
        (["--ids", "x"], "is not A..B"),
    ],
)
def test_a_bad_selection_is_refused_in_one_line(run, args, message):
    result = CliRunner().invoke(main, ["games", "--db", str(run), *args])
    assert result.exit_code in (1, 2) and message in result.output
    assert not result.stdout.startswith("(")


def test_a_missing_or_foreign_file_is_refused_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["games", "--db", str(tmp_path / "none.sqlite")])
    assert result.exit_code == 1 and "no state file" in result.output
    (tmp_path / "text.sqlite").write_text("not a database")
    result = CliRunner().invoke(main, ["games", "--db", str(tmp_path / "text.sqlite")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1


RESIGNER = """\
import sys
taken = set()
for line in sys.stdin:
    w = line.split()
    if w and w[0] in ("boardsize", "clear_board"):
        taken = set()
    if w and w[0] == "play":
        taken.add(w[2])
    answer = ""
    if w and w[0] == "genmove":  # the first empty cell, until five stones are down: then it gives up
        free = [c + r for r in "1234" for c in "abcd" if c + r not in taken]
        answer = "resign" if len(taken) >= 5 else free[0]
    print("= " + answer, end="\\n\\n", flush=True)
    if w and w[0] == "quit":
        break
"""


@pytest.mark.e2e
def test_an_outside_engines_resignations_are_written_as_hexgui_reads_them(tmp_path):
    """A rating match against an engine that resigns, then `hexzd games` as a real process."""
    run = copy_of_run(tmp_path)
    script = tmp_path / "resigner.py"
    script.write_text(RESIGNER)
    config = Config.model_validate(
        {"game": {"board_size": N}, "ratings": {"engines": {"quitter": f"{sys.executable} {script}"}}}
    )
    with sqlite3.connect(run) as c:
        duel = c.execute(
            "INSERT INTO duels (kind, candidate_id, sims, opponent_id, opponent_sims, pairs, started_at,"
            " opponent_engine) VALUES ('rating', NULL, 100, NULL, 0, 2, ?, 'quitter')",
            (time.time(),),
        ).lastrowid
    played, _ = play_stored(run, duel, config, log_dir=tmp_path)
    assert len(played) == 4
    out = subprocess.run(
        [sys.executable, "-m", "hexzd", "games", "--db", str(run), "--kind", "rating", "--last", "4"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    truth, games = expected(run), parse_sgf(out)
    for game in games:
        check_sgf(game, truth[game["GN"]])
    assert sorted(g["RE"] for g in games) == ["B+R", "B+R", "W+R", "W+R"]  # each colour, each game given up
    assert {g["PB"] for g in games} == {g["PW"] for g in games} == {"rollouts @100", "engine quitter"}
