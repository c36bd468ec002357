"""Game records in the formats other Hex programs read: SGF for HexGui, and trmph lines.

`hexzd games` writes the state file's games this way: self-play games, the
games of promotion duels and those of rating matches. The conventions were
checked against HexGui's source (ryanbhayward/hexgui and jakubpawlewicz/hexgui:
`sgf/SgfWriter.java`, `sgf/SgfReader.java`, `hex/HexPoint.java`,
`gui/HexGui.java`):

- SGF. `(;FF[4]GM[11]SZ[n]PB[..]PW[..]RE[B+]...;B[c3];W[b4]...)`, one game
  tree per game. A cell is its column letter and row number, `a1` the
  top-left corner: HexGui's names are hexzd's and HTP's. HexGui reads only
  the first game tree of a file (its SgfReader parses one and stops), so a
  collection opens at its first game; a folder gets one file per game.
- Swap. HexGui and MoHex write it `swap-pieces` and keep the first stone
  where it is, with White to move again (HexGui's `determineColorToMove`
  does not toggle on it): the players have exchanged colours. hexzd's board,
  like OpenSpiel's, instead has a White stone on the transposed cell and
  Black to move. The two positions are mirror images in the long diagonal
  with the colours exchanged, so from the swap on every move is written on
  the transposed cell by the other colour (`hexgui_moves`), and so is the
  result; PB names the player who swapped, who owns Black's stone from then
  on, and PW the player who opened. The HTP engine shows a swapped board the
  same way (hexzd.protocols.htp).
- trmph. `http://www.trmph.com/hex/board#n,` and the cells one after another,
  in the same frame as the SGF. trmph has no word for the swap: it is written
  as the first cell again (`c3c3`), the convention readers of trmph follow
  (ggpzero's LittleGolem converter, for one). A line has no result and no
  players.
- Result. `RE[B+]` or `RE[W+]`, and `B+R` or `W+R` where the loser resigned:
  its moves stop before a chain joins its sides. Only outside engines resign
  (rating matches against `[ratings] engines`); hexzd's players never do.
  Every record is replayed before it is written: illegal moves, or a winner
  the moves contradict, raise ValueError naming the game.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hexzd import __version__, store
from hexzd.config import stored
from hexzd.evaluation.scale import player
from hexzd.game.notation import HTP_SWAP, cell_name, parse_trmph
from hexzd.game.rules import BLACK, EMPTY, WHITE, Games
from hexzd.store import reads

__all__ = ["Record", "Selection", "hexgui_moves", "read_records", "replayed", "sgf", "texts", "trmph", "write"]

MATCH_KINDS = {"duel": "promotion", "rating": "rating"}  # a --kind of match: the duels.kind it reads
EVENTS = {"selfplay": "self-play", "duel": "promotion duel", "rating": "rating match"}
TRMPH = "http://www.trmph.com/hex/board#"
SUFFIXES = {"sgf": ".sgf", "trmph": ".trmph"}
CHUNK = 4096  # games replayed at once


@dataclass(frozen=True)
class Selection:
    """Which games `hexzd games` writes."""

    kind: str = "selfplay"  # selfplay, duel (promotion duels), rating (rating matches) or all
    model: int | None = None  # only games this model played (self-play, or either side of a match)
    first: int = 1  # ids from `first` to `last` (None: no end); ids of one table: games or duel_games
    last: int | None = None
    newest: int | None = None  # only the newest N of the rest (None: all)


@dataclass(frozen=True)
class Record:
    """One game, as the state file has it: hexzd's moves, hexzd's colours (OpenSpiel's swap)."""

    kind: str  # selfplay, duel or rating
    id: int  # games.id (self-play) or duel_games.id (matches)
    n: int
    moves: str  # games.moves / duel_games.moves: trmph form with `swap`
    winner: int  # BLACK or WHITE
    black: str  # who played Black, named as `hexzd ratings` names players: `model 12 @64`
    white: str
    at: float  # when the daemon stored it
    event: str  # `self-play`, `promotion duel 7`, `rating match 9`

    @property
    def name(self) -> str:
        """The game's name in messages and file names: `selfplay-12`, `rating-345`."""
        return f"{self.kind}-{self.id}"


def read_records(db, selection: Selection) -> list[Record]:
    """The games `selection` picks from state file `db`, in the order they were stored.

    Raises store.StateFileError for a file that is not a readable state file,
    ValueError (one line) for a model the file does not hold or a file whose
    matches' board size it does not say."""
    s = selection
    with store.consistent_read(db) as connection:
        if s.model is not None and not reads.has_model(connection, s.model):
            raise ValueError(f"no model {s.model} in the state file")
        text = store.config_text(connection)
        records = []
        if s.kind in ("selfplay", "all"):
            found = reads.selfplay_records(connection, s.model, s.first, s.last, s.newest)
            records += [_selfplay(row) for row in found]
        kinds = tuple(MATCH_KINDS[k] for k in MATCH_KINDS if s.kind in (k, "all"))
        if kinds:
            found = reads.match_records(connection, kinds, s.model, s.first, s.last, s.newest)
            if found and text is None:
                raise ValueError("the state file keeps no config, so the board size of its matches is unknown")
            n = stored(text).game.board_size if text else 0
            records += [_match(row, n) for row in found]
    records.sort(key=lambda r: (r.at, r.kind, r.id))
    return records[-s.newest :] if s.newest else records


def _selfplay(row: dict) -> Record:
    name = player(row["model_id"], row["sims"])
    args = row["id"], row["board_size"], row["moves"], row["winner"], name, name, row["created_at"]
    return Record("selfplay", *args, EVENTS["selfplay"])


def _match(row: dict, n: int) -> Record:
    candidate = player(row["candidate_id"], row["sims"])
    opponent = player(row["opponent_id"], row["opponent_sims"], row["opponent_engine"])
    black, white = (candidate, opponent) if row["candidate_colour"] == BLACK else (opponent, candidate)
    kind = "duel" if row["kind"] == MATCH_KINDS["duel"] else "rating"
    event = f"{EVENTS[kind]} {row['duel_id']}"
    return Record(kind, row["id"], n, row["moves"], row["winner"], black, white, row["created_at"], event)


# -- the moves as HexGui, MoHex and trmph.com see them ----------------------------


def hexgui_moves(actions: list[int], n: int) -> list[tuple[int, int]]:
    """(colour, action) of each move as HexGui records it: as hexzd played it up to the swap
    (action n * n, White's); after a swap, on the transposed cell by the other colour."""
    swapped = n * n in actions
    moves = []
    for ply, action in enumerate(actions):
        colour = BLACK if ply % 2 == 0 else WHITE
        if swapped and ply > 1:
            row, column = divmod(action, n)
            colour, action = BLACK + WHITE - colour, column * n + row
        moves.append((colour, action))
    return moves


def replayed(records: list[Record]) -> list[bool]:
    """Whether each game ended by resignation. Raises ValueError, naming the game, for a
    record whose moves are not legal or do not lead to its winner."""
    resigned: dict[str, bool] = {}
    for start in range(0, len(records), CHUNK):
        chunk = records[start : start + CHUNK]
        for n in {r.n for r in chunk}:
            same = [r for r in chunk if r.n == n]
            resigned.update(zip((r.name for r in same), _replay(same, n)))
    return [resigned[r.name] for r in records]


def _replay(records: list[Record], n: int) -> list[bool]:
    """Plays the records of one board size side by side, move by move (one kernel call a ply)."""
    actions = [_actions(r) for r in records]
    games = Games.new(len(records), n, swap=any(n * n in a for a in actions))
    for ply in range(max(map(len, actions), default=0)):
        step = np.array([a[ply] if ply < len(a) else -1 for a in actions], np.int64)
        legal = games.legal()
        for b in np.flatnonzero(step >= 0):
            if not legal[b, step[b]]:
                raise ValueError(f"{records[b].name}: move {ply + 1} ({cell_name(int(step[b]), n)}) is illegal")
        games.play(step)
    for b, record in enumerate(records):
        ended, said = int(games.winner[b]), _colour(record.winner)
        if ended not in (EMPTY, record.winner):
            raise ValueError(f"{record.name}: the record says {said} won, its moves that {_colour(ended)} did")
        if ended == EMPTY and games.to_play[b] == record.winner:  # only the player to move can resign
            raise ValueError(f"{record.name}: its moves stop undecided with {said}, the record's winner, to move")
    return [bool(w == EMPTY) for w in games.winner]


def _actions(record: Record) -> list[int]:
    try:
        return parse_trmph(record.moves, record.n)
    except ValueError as e:
        raise ValueError(f"{record.name}: {e}") from None


def _colour(colour: int) -> str:
    return "Black" if colour == BLACK else "White"


# -- the formats ---------------------------------------------------------------------


def sgf(record: Record, resigned: bool) -> str:
    """One SGF game tree, as HexGui writes one, with the players, result, date and event."""
    n, actions = record.n, parse_trmph(record.moves, record.n)
    moves = hexgui_moves(actions, n)
    swapped = n * n in actions
    black, white = (record.white, record.black) if swapped else (record.black, record.white)
    winner = BLACK + WHITE - record.winner if swapped else record.winner
    root = {
        "FF": "4",
        "GM": "11",
        "AP": f"hexzd:{__version__}",
        "SZ": str(n),
        "PB": black,
        "PW": white,
        "RE": ("B+" if winner == BLACK else "W+") + ("R" if resigned else ""),
        "DT": time.strftime("%Y-%m-%d", time.gmtime(record.at)),
        "EV": f"hexzd {record.event}",
        "GN": record.name,
    }
    nodes = [";" + "".join(f"{key}[{_escaped(value)}]" for key, value in root.items())]
    nodes += [f";{'B' if c == BLACK else 'W'}[{HTP_SWAP if a == n * n else cell_name(a, n)}]" for c, a in moves]
    lines = [nodes[0]] + ["".join(nodes[i : i + 12]) for i in range(1, len(nodes), 12)]
    return "(" + "\n".join(lines) + ")\n"


def _escaped(text: str) -> str:
    """SGF SimpleText: `]` and `\\` escaped, line breaks made spaces."""
    return " ".join(text.replace("\\", "\\\\").replace("]", "\\]").split())


def trmph(record: Record) -> str:
    """The game as a trmph.com address, in HexGui's frame, the swap as the first cell again."""
    n, actions = record.n, parse_trmph(record.moves, record.n)
    cells = [cell_name(actions[0] if a == n * n else a, n) for _, a in hexgui_moves(actions, n)]
    return f"{TRMPH}{n},{''.join(cells)}"


def texts(records: list[Record], fmt: str) -> list[str]:
    """Each record in format `fmt` (sgf, trmph), one text a game. Raises ValueError for a
    record that does not replay (`replayed`)."""
    if fmt == "trmph":
        replayed(records)  # checked all the same, though a trmph line has no result
        return [trmph(r) + "\n" for r in records]
    return [sgf(r, flag) for r, flag in zip(records, replayed(records))]


def write(records: list[Record], fmt: str, out: Path, folder: bool) -> list[Path]:
    """Writes the records in format `fmt` to file `out`, all of them, or with `folder` to a
    file a game in folder `out` (made if missing); the paths written."""
    written = texts(records, fmt)
    if not folder:
        out.write_text("".join(written))
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{r.name}{SUFFIXES[fmt]}" for r in records]
    for path, text in zip(paths, written):
        path.write_text(text)
    return paths
