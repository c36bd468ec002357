"""The HTP engine and `hexzd play`: in-process transcripts, and real processes.

The referee of the process game keeps its own board and decides the winner
with its own flood fill (plain Python, below), never with hexzd's engine.
"""

import io
import re
import subprocess
import sys
import time

import pytest
from states import add_model

from hexzd import store
from hexzd.game.notation import LETTERS, board_text
from hexzd.game.rules import BLACK, EMPTY, WHITE
from hexzd.protocols.htp import EngineError, HtpServer, open_engine

HEXZD = [sys.executable, "-m", "hexzd"]


def engine(size=3, **kw):
    notes = []
    e = HtpServer(size=size, sims=kw.pop("sims", 64), warn=notes.append, **kw)
    return e, notes


def transcript(e, script):
    """Sends each command; checks each answer, and that a `?` left the state alone."""
    for command, expected in script:
        before = (e.n, e.cells.copy(), list(e.moves))
        answer = e.handle(command)
        assert answer == expected, command
        if answer and answer.startswith("?"):
            assert (e.n, list(e.moves)) == before[::2] and (e.cells == before[1]).all(), command


def ok(result=""):
    return f"= {result}\n\n"


def error(message):
    return f"? {message}\n\n"


NO_SWAP = error("swap is only legal as White's first move, with the swap rule on")
COMMANDS = (
    "protocol_version\nname\nversion\nlist_commands\nknown_command\nboardsize\n"
    "clear_board\nplay\ngenmove\nundo\nshowboard\nfinal_score\nhexgui-analyze_commands\nquit"
)


def test_transcript_of_every_command():
    e, notes = engine(size=3)
    assert notes == ["hexzd: random-rollout MCTS, 64 simulations per move"]
    transcript(
        e,
        [
            ("protocol_version", ok("2")),
            ("1 name", "=1 hexzd random-rollouts\n\n"),
            ("version", ok(f"{__import__('hexzd').__version__} random-rollout MCTS, 64 simulations per move")),
            ("list_commands", ok(COMMANDS)),
            ("2 known_command genmove", "=2 true\n\n"),
            ("known_command komi", ok("false")),
            ("known_command", error("usage: known_command NAME")),
            ("frobnicate", error("unknown command")),
            ("7 frobnicate a1", "?7 unknown command\n\n"),
            ("", None),
            ("   # a comment", None),
            ("8", "?8 no command after the id\n\n"),
            ("name please", error("usage: name")),
            ("undo", error("there is no move to undo")),
            ("boardsize 1", error("board size 1 is not between 2 and 19")),
            ("boardsize 20", error("board size 20 is not between 2 and 19")),
            ("boardsize 3 4", error("hexzd plays square boards only")),
            ("boardsize x", error("'x' is not a board size")),
            ("boardsize", error("usage: boardsize N (or boardsize N N)")),
            ("boardsize 4 4", ok()),
            ("boardsize 3", ok()),
            ("final_score", ok("cannot score")),
            ("play b a1", ok()),
            ("play b a1", error("a1 is occupied")),
            ("play w A1", error("a1 is occupied")),
            ("play x a2", error("'x' is not a colour: b, black, w or white")),
            ("play b d1", error("d1 is off the 3x3 board")),
            ("play b zz", error("'zz' is not a cell name such as a1")),
            ("play b", error("usage: play b|w CELL")),
            ("play w swap", NO_SWAP),
            ("genmove", error("usage: genmove b|w")),
            ("genmove red", error("'red' is not a colour: b, black, w or white")),
            ("play white c3\r\n", ok()),
            ("3 play black\ta2", "=3 \n\n"),
            (
                "showboard",
                ok("\n" + "\n".join(["  a b c", " 1\\X . .\\1", "  2\\X . .\\2", "   3\\. . O\\3", "     a b c"])),
            ),
            ("undo", ok()),
            ("undo", ok()),
            ("play black a2 # a comment", ok()),  # out of turn: Black twice
            ("final_score", ok("cannot score")),
            ("10 play b a3", "=10 \n\n"),  # a1 a2 a3 joins the top and bottom rows
            ("final_score", ok("B+")),
            ("play w b1", error("the game is over")),
            ("genmove w", ok("resign")),  # as MoHex answers once the game is over
            ("undo", ok()),
            ("final_score", ok("cannot score")),
            ("play w a3", ok()),
            ("play w b2", ok()),
            ("play w c1", ok()),  # a3 b2 c1 joins column a to column c
            ("final_score", ok("W+")),
            ("clear_board", ok()),
            ("final_score", ok("cannot score")),
            ("showboard", ok("\n" + board_text([EMPTY] * 9, 3))),
        ],
    )
    assert e.moves == [] and not e.quitting
    assert e.handle("99 quit") == "=99 \n\n" and e.quitting


def test_one_simulation_still_plays_a_move():
    e = open_engine(random_rollouts=True, sims=1)
    e.handle("boardsize 4")
    for colour in "bw":
        answer = e.handle(f"genmove {colour}")
        assert re.fullmatch(r"= [a-d][1-4]", answer.strip()), answer


def test_genmove_plays_a_legal_move_for_either_colour():
    e, _ = engine(size=3)
    for colour, other in (("b", "w"), ("w", "b"), ("w", "b")):  # White twice: out of turn
        answer = e.handle(f"genmove {colour}")
        cell = answer[2:].strip()
        assert answer.startswith("= ") and len(cell) == 2, answer
        assert e.handle(f"play {other} {cell}") == error(f"{cell} is occupied")
    assert [c for c, _ in e.moves] == [BLACK, WHITE, WHITE]


def test_swap_where_the_rule_is_on():
    e, _ = engine(size=3, swap=True)
    transcript(
        e,
        [
            ("play b swap", NO_SWAP),
            ("play b b1", ok()),
            ("play b swap", NO_SWAP),
            ("play w swap-pieces", ok()),  # as MoHex and HexGui see it: the stone stays, White moves
            (
                "showboard",
                ok("\n" + "\n".join(["  a b c", " 1\\. X .\\1", "  2\\. . .\\2", "   3\\. . .\\3", "     a b c"])),
            ),
            ("play w swap", NO_SWAP),
            ("undo", ok()),
            ("play w swap", ok()),
        ],
    )


def board(n, black=(), white=()):
    """`showboard`'s answer for these stones, cell names as HTP writes them."""
    cells = [EMPTY] * (n * n)
    for colour, names in ((BLACK, black), (WHITE, white)):
        for name in names:
            cells[(int(name[1:]) - 1) * n + LETTERS.index(name[0])] = colour
    return ok("\n" + board_text(cells, n))


def test_a_hexgui_session_with_the_swap_as_hexgui_and_mohex_keep_it():
    """HexGui's commands (hexgui/gui/HexGui.java): after `swap-pieces` the stone stays where it
    was and White moves; hexzd's own board is the mirror image, so every answer crosses over."""
    e, _ = engine(size=3, swap=True, sims=50)
    transcript(
        e,
        [
            ("name", ok("hexzd random-rollouts")),
            ("hexgui-analyze_commands", ok("string/ShowBoard/showboard\nstring/Final Score/final_score")),
            ("boardsize 3 3", ok()),
            ("play black a2", ok()),
            ("play white swap-pieces", ok()),
            ("showboard", board(3, black=["a2"])),
            ("play white a3", ok()),  # White moves again after its swap, as HexGui says
            ("play black c3", ok()),
            ("play white b2", ok()),
            ("play black b3", ok()),
            ("final_score", ok("cannot score")),
            ("play white c1", ok()),  # a3 b2 c1 joins column a to column c
            ("showboard", board(3, black=["a2", "c3", "b3"], white=["a3", "b2", "c1"])),
            ("final_score", ok("W+")),
            ("genmove black", ok("resign")),
            ("play black a1", error("the game is over")),
            ("undo", ok()),
            ("play white resign", ok()),  # HexGui steps onto a resignation in a record...
            ("showboard", board(3, black=["a2", "c3", "b3"], white=["a3", "b2"])),
            ("undo", ok()),  # ...and back off it: the resignation, not a stone
            ("play black a1", ok()),
            ("play white a1", error("a1 is occupied")),
            ("undo", ok()),
            ("final_score", ok("cannot score")),
            ("genmove white", ok("c1")),  # the search on hexzd's mirrored board finds the win in one
            ("final_score", ok("W+")),
            ("showboard", board(3, black=["a2", "c3", "b3"], white=["a3", "b2", "c1"])),
        ],
    )


def test_genmove_swaps_only_where_it_may():
    e, _ = engine(size=3, swap=True, sims=300)
    transcript(e, [("play b b2", ok()), ("genmove w", ok("swap-pieces"))])  # the centre wins
    assert e.moves == [(BLACK, 4), (WHITE, 9)] and e.cells[4] == WHITE
    e, _ = engine(size=3, swap=True, sims=300)
    transcript(e, [("play w b2", ok())])  # a lone White stone: nothing to swap
    assert e.handle("genmove w") != ok("swap-pieces") and e.moves[1][1] < 9


def lost_for_white(**kw):
    """3x3, White to move against Black's b1 and a3: a2 and b2 both win for Black."""
    e, _ = engine(size=3, sims=200, **kw)
    transcript(e, [("play b b1", ok()), ("play b a3", ok())])
    return e


def test_resign_only_when_every_move_loses():
    e = lost_for_white()
    assert e.handle("genmove w") == ok("resign") and len(e.moves) == 2  # nothing played
    assert e.handle("genmove b") in (ok("a2"), ok("b2"))  # Black takes a win in one
    assert e.handle("final_score") == ok("B+")
    e = lost_for_white(resign=False)
    assert e.handle("genmove w").startswith("= ") and len(e.moves) == 3
    e, _ = engine(size=3, sims=200)
    assert e.handle("genmove b") != ok("resign")  # the empty board is not lost


def test_search_for_a_time():
    e, _ = engine(size=5, seconds=0.2)
    start = time.monotonic()
    assert e.handle("genmove b").startswith("= ")
    assert 0.2 <= time.monotonic() - start < 5
    assert "0.2 s per move" in e.handle("version")


# -- a game between two engine processes, refereed independently --------------------------


def neighbours(r, c, n):
    for dr, dc in ((0, -1), (0, 1), (-1, 0), (1, 0), (-1, 1), (1, -1)):
        if 0 <= r + dr < n and 0 <= c + dc < n:
            yield r + dr, c + dc


def connected(stones, colour, n):
    """Flood fill: do `colour`'s stones join its two edges? (Black: rows, White: columns.)"""
    start = [(0, c) if colour == BLACK else (c, 0) for c in range(n)]
    todo = [p for p in start if stones.get(p) == colour]
    seen = set(todo)
    while todo:
        r, c = todo.pop()
        if (r if colour == BLACK else c) == n - 1:
            return True
        for q in neighbours(r, c, n):
            if stones.get(q) == colour and q not in seen:
                seen.add(q)
                todo.append(q)
    return False


class Process:
    def __init__(self, *args):
        self.p = subprocess.Popen(
            HEXZD + ["htp", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def ask(self, command):
        self.p.stdin.write(command + "\n")
        self.p.stdin.flush()
        lines = []
        while (line := self.p.stdout.readline()) not in ("\n", ""):
            lines.append(line.rstrip("\n"))
        return "\n".join(lines)

    def quit(self):
        assert self.ask("quit") == "= "
        _, err = self.p.communicate(timeout=30)
        assert self.p.returncode == 0, err
        return err


@pytest.mark.e2e
def test_two_engine_processes_play_a_game_to_the_end():
    n = 5
    players = {colour: Process("--random-rollouts", "--sims", "50", "--no-resign") for colour in (BLACK, WHITE)}
    try:
        for p in players.values():
            assert p.ask(f"boardsize {n} {n}") == "= "
            assert p.ask("final_score") == "= cannot score"
        stones, colour, winner = {}, BLACK, None
        letter = {BLACK: "b", WHITE: "w"}
        while winner is None:
            answer = players[colour].ask(f"genmove {letter[colour]}")
            assert answer.startswith("= ")
            cell = answer[2:]
            r, c = int(cell[1:]) - 1, LETTERS.index(cell[0])
            assert 0 <= r < n and 0 <= c < n and (r, c) not in stones, cell
            stones[r, c] = colour
            other = WHITE if colour == BLACK else BLACK
            assert players[other].ask(f"play {letter[colour]} {cell}") == "= "
            if connected(stones, colour, n):
                winner = colour
            assert not connected(stones, other, n)
            colour = other
        assert len(stones) <= n * n
        expected = "= B+" if winner == BLACK else "= W+"
        for p in players.values():
            assert p.ask("final_score") == expected
        assert "random-rollout MCTS" in players[BLACK].quit()
        players[WHITE].quit()
    finally:
        for p in players.values():
            p.p.kill() if p.p.poll() is None else None


# -- with a state file -----------------------------------------------------------------


@pytest.fixture(scope="module")
def run_db(tmp_path_factory):
    """A state file whose best model is model 1, an untrained 4x4 network."""
    db = tmp_path_factory.mktemp("htp") / "run.sqlite"
    store.prepare(db)
    add_model(db, board_size=4)
    add_model(db, board_size=4, promoted=False, pruned=True)
    return db


@pytest.mark.e2e
def test_a_state_file_engine_plays_and_falls_back_off_its_board_size(run_db):
    p = Process("--db", str(run_db), "--sims", "20")
    try:
        assert p.ask("name") == "= hexzd"
        assert p.ask("version").endswith("model 1 (1x8 network), 20 simulations per move")
        moves = {p.ask("genmove b"), p.ask("genmove w"), p.ask("genmove b")}
        assert len(moves) == 3 and all(m[2] in "abcd" and m[3] in "1234" for m in moves)
        assert p.ask("boardsize 5") == "= "
        assert p.ask("name") == "= hexzd random-rollouts"
        assert "random-rollout MCTS (model 1 plays 4x4, not 5x5)" in p.ask("version")
        for colour in "bwbw":
            assert p.ask(f"genmove {colour}")[2] in "abcde"
        assert p.ask("boardsize 4") == "= " and p.ask("name") == "= hexzd"
        assert "model 1 plays 4x4, not 5x5" in p.quit()
    finally:
        p.p.kill() if p.p.poll() is None else None


def test_state_file_errors_and_the_unpromoted_fall_back(run_db, tmp_path):
    with pytest.raises(EngineError, match="no state file .*--random-rollouts"):
        open_engine(tmp_path / "missing.sqlite")
    with pytest.raises(EngineError, match="no model 9 in the state file"):
        open_engine(run_db, model="9")
    with pytest.raises(EngineError, match="model 2's weights were pruned"):
        open_engine(run_db, model="2")
    with pytest.raises(EngineError, match="--model is `best` or a model id, not 'newest'"):
        open_engine(run_db, model="newest")
    with pytest.raises(EngineError, match="--sims or --seconds, not both"):
        open_engine(run_db, sims=5, seconds=1.0)
    fresh = tmp_path / "fresh.sqlite"
    store.prepare(fresh)
    notes = []
    e = open_engine(fresh, sims=10, warn=notes.append)
    assert e.network is None and e.n == 11
    assert notes == [f"hexzd: random-rollout MCTS (no model of {fresh} is promoted yet), 10 simulations per move"]
    e = open_engine(run_db, model="1", size=4, sims=10, warn=notes.append)
    assert e.uses_network and e.handle("genmove b").startswith("= ")


# -- hexzd play -------------------------------------------------------------------


@pytest.mark.e2e
def test_play_with_piped_moves_plays_to_the_end():
    cells = [f"{x}{y}" for y in "123" for x in "abc"]
    moves = "\n".join(["zz", "undo", "b2", "undo", *cells, *cells]) + "\n"
    run = subprocess.run(
        HEXZD + ["play", "--random-rollouts", "--size", "3", "--sims", "20"],
        input=moves,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "'zz' is not a cell name such as a1" in out and "you have no move to take back" in out
    assert "hexzd plays" in out and ("you win" in out or "hexzd wins" in out), out
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("moves", ["quit\n", "", "c3\nundo\nundo\nquit\n"])
def test_play_quits_on_request_and_at_the_end_of_input(moves, capsys):
    from hexzd.tui.play import play_game

    e, _ = engine(size=3, sims=20)
    play_game(e, "white", cursor=False, stdin=io.StringIO(moves))
    out = capsys.readouterr().out
    assert out.rstrip().endswith("quit") and "hexzd plays" in out  # Black moved first
    assert len(e.moves) == 1  # c3, the answer, both taken back; then nothing of White's to undo
    assert ("you have no move to take back" in out) == moves.startswith("c3")


@pytest.mark.asyncio
async def test_play_with_the_cursor():
    from hexzd.tui.play import HumanGame, cursor_app

    e, _ = engine(size=3, sims=20)
    match = HumanGame(e, BLACK)
    app = cursor_app(match)
    async with app.run_test() as pilot:
        await pilot.press("up", "left", "enter")  # a1
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert e.moves[0] == (BLACK, 0) and len(e.moves) == 2
        await pilot.press("enter")  # a1 again: occupied, said, nothing played
        assert len(e.moves) == 2 and "a1 is occupied" in str(app.query_one("#status").render())
        await pilot.press("u")
        assert e.moves == []
        await pilot.press("q")
