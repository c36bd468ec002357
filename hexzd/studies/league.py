"""`hexzd league`: the snapshots of several runs rated on one Elo scale.

Each run rates its own snapshots on its own games. A scaling study (network
sizes, budgets, seeds, settings: a `hexzd sweep`) wants every run's
snapshots in one pool instead: the same reference ladder, the same two-stage
fit (hexzd.evaluation.scale) and the same matchmaking by information, with
snapshots of different runs meeting each other as well as the references.
Every snapshot counts alike (none is "the newest"), and all play at
`sims` simulations with the default search settings, whatever their runs
used.

The league file (hexzd.store.league_file) keeps every game, so a rerun resumes:
it checks again each run it has and each run given, adds the snapshots
promoted since, and plays on from the games it has. A state file it cannot
use (missing, not SQLite, corrupt, a newer schema, another board size, no
promoted snapshot) is named with the reason and skipped; the others go on.
State files are only read (WAL lets that run beside their daemons), and
`cpu_share` holds the league to a share of the machine's cores beside them.

The reference ladder is the daemons' kept ladder (`[ratings] ladder_file`,
hexzd.store.ladder): each session starts with the reference games that runs
kept since the last, and keeps the league's own there, so a league and the
runs beside it rate against the same games, and a league of finished runs
need not play its ladder again.

Games come in colour-swapped pairs, each from an opening of its own that
goes on down the pairing's list (hexzd.evaluation.openings), as in duels. A
pair is stored whole when its second game ends, so a stop (Ctrl-C, the time
limit) loses only the pairs in flight.
"""

import math
import signal
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from hexzd import processes, store
from hexzd.config import Config, DuelConfig, RatingsConfig
from hexzd.evaluation import scale
from hexzd.evaluation.matches import load_player, play_pairs
from hexzd.evaluation.openings import Openings, opening, pairing_seed
from hexzd.evaluation.throttle import Throttle
from hexzd.nn.snapshot import Snapshot
from hexzd.store import ladder, reads
from hexzd.store import league_file as db

SLEEP_SLICE = 0.2  # seconds: a throttled wait notices a stop within this


class LeagueError(RuntimeError):
    """A league that cannot play: no usable run, or a --size that is not the league's."""


class Unusable(Exception):
    """A state file the league cannot use now; the message says why."""


@dataclass
class Settings:
    """How the league plays; the defaults are the daemon's rating matches'."""

    sims: int = DuelConfig().sims  # simulations per move of every snapshot
    match_pairs: int = RatingsConfig().match_pairs
    ladder_pairs: int = RatingsConfig().ladder_pairs
    target_elo: float = RatingsConfig().target_elo  # stop once every interval is within +-this
    games: int | None = None  # stop after this many more games
    minutes: float | None = None  # stop after this long
    cpu_share: float = 1.0  # of the machine's cores, as evaluation.cpu_share
    size: int | None = None  # the board; by default the first usable run's
    references: list[int] = field(default_factory=lambda: list(RatingsConfig().references))  # a new league's
    ladder_file: str = RatingsConfig().ladder_file  # the kept ladder shared with the runs ("": none)


@dataclass
class Found:
    """What the league takes from a usable state file."""

    first_model_at: float  # with the path, the run's identity
    shape: tuple[int, int, int]  # board size, blocks, channels of its networks
    snapshots: list[dict]  # reads.rateable_snapshots


def inspect(path: Path) -> Found:
    """A state file's promoted snapshots, read in one snapshot of the file beside its daemon.

    Raises Unusable with the reason the league cannot use it."""
    if not path.is_file():
        raise Unusable("no such file")
    try:
        with store.consistent_read(path) as c:  # the daemon may promote meanwhile
            snapshots = reads.rateable_snapshots(c)
            if not snapshots:
                raise Unusable("no promoted snapshot yet")
            first, blob = reads.first_model_at(c), store.weights(c, snapshots[-1]["model_id"])
    except store.StateFileError as e:
        raise Unusable(str(e)) from None
    try:
        spec = Snapshot.from_bytes(blob).spec  # the network knows its board and shape, whatever the config says
    except Exception as e:  # any bytes that do not load: the file, not the league, is at fault
        raise Unusable(f"model {snapshots[-1]['model_id']}'s weights do not load: {e}") from None
    return Found(first, (spec.board_size, spec.blocks, spec.channels), snapshots)


class Stop:
    """SIGINT (Ctrl-C) or SIGTERM while the league plays (`handle`, the handler of both):
    the first stops it cleanly at the next move, a second at once. Either way every
    stored pair is kept."""

    def __init__(self):
        self.requested: str | None = None

    def handle(self, sig, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(sig).name


@dataclass
class Match:
    """A match as it is played: its games reported and stored, the candidate's wins."""

    name: str
    id: int
    pairs: int
    reported: int = 0
    stored: int = 0
    wins: int = 0
    repeats: int = 0

    @property
    def whole(self) -> bool:
        """Played through: not stopped with games in flight."""
        return self.reported == 2 * self.pairs

    @property
    def line(self) -> str:
        repeats = f", {self.repeats} repeated games dropped" if self.repeats else ""
        return f"{self.name}: {self.wins}-{self.stored - self.wins}{repeats}"


class League:
    """One session of a league file: its runs checked, then matches until a stop."""

    def __init__(self, connection, settings: Settings, echo):
        self.connection, self.settings, self.echo = connection, settings, echo
        self.config = Config()  # every snapshot plays with the default search and device settings
        self.throttle = Throttle()
        self.references: list[int] = db.setting(connection, "references") or settings.references
        self.size: int | None = db.setting(connection, "board_size")
        if settings.size is not None and self.size not in (None, settings.size):
            raise LeagueError(f"this league is {self.size}x{self.size}, not {settings.size}x{settings.size}")
        self.size = self.size or settings.size
        self.snapshots: dict[int, dict] = {}  # every snapshot, by its id here
        self.players: list[int] = []  # the snapshots that play: those of the runs in use
        self.warm: set[frozenset] = set()  # the kinds of matches played this session (hexzd.evaluation.scale.kind)

    # -- the runs ----------------------------------------------------------------

    def admit(self, given) -> None:
        """Checks every run the league has and every run given; records each as used or skipped."""
        known = db.runs(self.connection)
        typed = {Path(p).resolve(): str(p) for p in given}  # named as the user typed them
        for path in dict.fromkeys([*(Path(r["path"]) for r in known), *typed]):
            label = typed.get(path, str(path))
            try:
                found = inspect(path)
                if self.size is not None and found.shape[0] != self.size:
                    n = found.shape[0]
                    raise Unusable(f"a {n}x{n} run; this league is {self.size}x{self.size}")
            except Unusable as e:
                self._skip(path, known, str(e))
                self.echo(f"skipped {label}: {e}")
                continue
            self.size = found.shape[0]
            self._use(path, known, found, label)
        if self.size is None or not any(r["status"] == "used" for r in db.runs(self.connection)):
            raise LeagueError("no usable state file: nothing to rate")
        with db.transaction(self.connection):
            db.fix_setting(self.connection, "board_size", self.size)
            db.fix_setting(self.connection, "references", self.references)
            db.fix_setting(self.connection, "run", f"league-{uuid.uuid4().hex}")  # its name in the kept ladder
        self._read_snapshots()
        self.share_ladder(start=True)

    def share_ladder(self, start: bool = False) -> None:
        """Keeps the league's reference games in the kept ladder (hexzd.store.ladder); at the start
        of a session, first copies in those other runs kept since. A ladder file that cannot be
        used is named, and the league plays its own ladder."""
        if not self.settings.ladder_file:
            return
        path, run = Path(self.settings.ladder_file).expanduser(), db.setting(self.connection, "run")
        key = scale.ladder_key(self.size, False)  # a league plays without swap
        try:
            if start:
                copied = db.add_kept(self.connection, ladder.kept(path, key, run), self.references, time.time())
                if copied:
                    self.echo(f"the ladder has {copied} more games, kept by runs in {path}")
            ladder.keep(path, key, run, db.own_ladder_games(self.connection))
        except (sqlite3.Error, OSError, store.StateFileError) as e:
            self.echo(f"the kept ladder {path} cannot be used: {e}")

    def _use(self, path: Path, known: list[dict], found: Found, label: str) -> None:
        """The run's row (the same file and first model, or a row never used) gets its new snapshots."""
        here = [r for r in known if Path(r["path"]) == path]
        mine = next((r for r in here if r["first_model_at"] == found.first_model_at), None)
        mine = mine or next((r for r in here if r["first_model_at"] is None), None)
        at = time.time()
        with db.transaction(self.connection):
            for r in here:
                if r is not mine:  # its snapshots stay rated, but cannot play any more
                    db.mark_skipped(self.connection, r["id"], "its file now holds another run", at)
            run_id = mine["id"] if mine else db.add_run(self.connection, path, self._name(path), at)
            db.mark_used(self.connection, run_id, found.first_model_at, found.shape, at)
            new = db.add_snapshots(self.connection, run_id, found.snapshots, at)
        _, blocks, channels = found.shape
        self.echo(f"{label}: {len(found.snapshots)} promoted snapshots ({new} new), a {blocks}x{channels} network")

    def _skip(self, path: Path, known: list[dict], reason: str) -> None:
        at = time.time()
        with db.transaction(self.connection):
            ids = [r["id"] for r in known if Path(r["path"]) == path]
            for run_id in ids or [db.add_run(self.connection, path, self._name(path), at)]:
                db.mark_skipped(self.connection, run_id, reason, at)

    def _name(self, path: Path) -> str:
        """The file's stem, numbered where another run has it already."""
        taken = {r["name"] for r in db.runs(self.connection)}
        name, k = path.stem, 2
        while name in taken:
            name, k = f"{path.stem}#{k}", k + 1
        return name

    def _read_snapshots(self) -> None:
        self.snapshots = {s["id"]: s for s in db.snapshots(self.connection)}
        self.players = [key for key, s in self.snapshots.items() if s["status"] == "used"]

    def _drop_run(self, run_id: int, reason: str) -> None:
        """A run whose file failed while the league played: skipped from now on."""
        db.mark_skipped(self.connection, run_id, reason, time.time())
        self.echo(f"skipped {next(s['path'] for s in self.snapshots.values() if s['run_id'] == run_id)}: {reason}")
        self._read_snapshots()

    # -- names -------------------------------------------------------------------

    def player(self, key: int | None, sims: int) -> str:
        """The player's name in its run, as the run's own ratings table has it: `model 12 @64`."""
        return scale.player(None if key is None else self.snapshots[key]["model_id"], sims)

    def label(self, key: int | None, sims: int) -> str:
        """The player with its run, for progress lines."""
        return self.player(key, sims) if key is None else f"{self.snapshots[key]['run']} {self.player(key, sims)}"

    # -- playing -----------------------------------------------------------------

    def play(self, stop: Stop, deadline: float) -> str:
        """Matches until a limit, the target or a stop; the reason it stopped."""
        s, played, r = self.refit(), 0, self.settings

        def should_stop() -> bool:  # polled once a move
            return self._hold(stop) or time.monotonic() >= deadline

        while True:
            if stop.requested:
                return f"stopped by {stop.requested}"
            if r.games is not None and played >= r.games:
                return f"{played} games played"
            if time.monotonic() >= deadline:
                return f"{r.minutes:g} minutes passed"
            if self.widest(s) <= r.target_elo:
                return f"every interval is within +-{r.target_elo:g} Elo"
            if not self.players:
                return "no run left to play"
            pairing = self.next_pairing(s)
            if pairing is None:
                return "no match would narrow an interval"
            pairs = r.match_pairs if r.games is None else min(r.match_pairs, math.ceil((r.games - played) / 2))
            try:
                m = self.match(pairing, pairs, should_stop)
            except Unusable:
                continue  # its run is skipped from now on: choose again without it
            played += m.stored
            if pairing.candidate_id is None and pairing.opponent_id is None:
                self.share_ladder()
            s = self.refit()
            self.echo(f"{m.line}; widest 95% interval +-{self.widest(s):.0f} Elo, {played} games this session")
            if m.whole and not m.stored:  # deterministic players past the end of a tiny board's openings
                return "the last match found no game not played before"

    def next_pairing(self, s: scale.Scale) -> scale.Pairing | None:
        """The ladder first, then the match that narrows the intervals most per CPU-second."""
        c, r = self.connection, self.settings
        ladder = scale.ladder_match(self.references, db.ladder_games(c), r.ladder_pairs)
        if ladder is not None:
            return ladder
        costs = scale.seconds_per_game(db.match_times(c))
        return scale.next_match(
            s, self.references, self.players, r.sims, 2 * r.match_pairs, costs, r.target_elo, newest_weight=1.0
        )

    def match(self, pairing: scale.Pairing, pairs: int, should_stop) -> "Match":
        """Plays `pairs` pairs, each from the pairing's next opening, storing each pair whole."""
        c = self.connection
        a, b = (pairing.candidate_id, pairing.sims), (pairing.opponent_id, pairing.opponent_sims)
        first, seen = db.next_opening(c, *a, *b), db.pairing_games(c, *a, *b)
        candidate, opponent = self._load(*a, seed=2 * first), self._load(*b, seed=2 * first + 1)
        # The openings' balance by one network of the two, the same for the pairing every time.
        nets = {key: p.evaluate for key, p in ((a[0], candidate), (b[0], opponent)) if key is not None}
        openings = Openings(self.size, pairing_seed(a, b), nets[min(nets)] if nets else None)
        match_id = db.new_match(c, (*a, *b), first, pairs, time.time())
        match = Match(f"{self.label(*a)} vs {self.label(*b)}", match_id, pairs)
        pending: dict[int, list | None] = {}  # pair -> its games so far; None once one was a repeat

        def finished(index, moves, winner, colour):
            pair = first + index // 2
            match.reported += 1
            if (moves, colour) in seen:  # as in duels: a repeated game never counts, nor does its pair
                match.repeats += 1
                pending[pair] = None
                return
            seen.add((moves, colour))
            games = pending.setdefault(pair, [])
            if games is None:
                return
            games.append((pair, moves, winner, colour))
            if len(games) == 2:
                db.add_pair(c, match.id, games, time.time())
                match.stored += 2
                match.wins += sum(w == col for _, _, w, col in games)

        cpu = time.process_time()  # CPU time, not wall: the throttle's waits cost nothing
        moves = [opening(openings, first + p) for p in range(pairs)]
        play_pairs(candidate, opponent, self.size, False, moves, finished, should_stop)
        kinds = frozenset((scale.kind(*a), scale.kind(*b)))
        if match.whole:  # an interrupted match says nothing of what a whole one costs
            # Nor does a session's first of its kinds: it pays for loading and compiling the kernels.
            timed = time.process_time() - cpu if kinds in self.warm else None
            db.finish_match(c, match.id, timed, time.time())
        self.warm.add(kinds)
        return match

    def _load(self, key: int | None, sims: int, seed: int):
        """A player; a run whose file fails now is skipped from here on (Unusable)."""
        if key is None:
            return load_player(None, None, sims, self.config, seed)
        s = self.snapshots[key]
        try:
            return load_player(s["path"], s["model_id"], sims, self.config, seed)
        except (KeyError, sqlite3.Error, store.StateFileError) as e:
            self._drop_run(s["run_id"], f"model {s['model_id']} cannot be loaded: {e}")
            raise Unusable(str(e)) from None

    def _hold(self, stop: Stop) -> bool:
        """Waits while the league runs ahead of its CPU share; True once a stop is asked for."""
        end = time.monotonic() + self.throttle.wait(self.settings.cpu_share)
        while not stop.requested and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, SLEEP_SLICE))
        return stop.requested is not None

    # -- ratings -------------------------------------------------------------------

    def refit(self) -> scale.Scale:
        """Stores every player's rating from all the league's games; the scale with every
        playing snapshot in it, for matchmaking."""
        results = db.results(self.connection)
        rows = [
            (self.player(key, sims), key, sims, *rest) for _, key, sims, *rest in scale.rate(results, self.references)
        ]
        db.replace_ratings(self.connection, rows, time.time())
        return scale.scale(results, self.references, [(key, self.settings.sims) for key in self.players])

    def widest(self, s: scale.Scale) -> float:
        """The widest half 95% interval among the references (on the ladder) and the playing snapshots."""
        ladder, players = s.ladder.ratings(), s.players.ratings()
        halves = [(r.hi - r.lo) / 2 for r in ladder.values()]
        halves += [(r.hi - r.lo) / 2 for r in (players[scale.player(k, self.settings.sims)] for k in self.players)]
        return max(halves)

    def summary(self, stopped: str) -> dict:
        c = self.connection
        return {
            "board_size": self.size,
            "references": self.references,
            "sims": self.settings.sims,
            "stopped": stopped,
            "games": c.execute("SELECT COUNT(*) FROM games").fetchone()[0],
            "runs": db.runs(c),
            "ratings": db.rating_table(c),
        }


def run_league(path, runs, settings: Settings, echo=print) -> dict:
    """Rates the runs' snapshots in the league file `path` until a limit, the target or Ctrl-C.

    runs: state files to add; the league's own runs are checked again too.
    Returns the summary: the runs (used or skipped, with reasons) and the ratings."""
    deadline = time.monotonic() + (60 * settings.minutes if settings.minutes is not None else math.inf)
    connection = db.open_league(path)
    try:
        league = League(connection, settings, echo)
        stop = Stop()
        with processes.on_stop_signals(stop.handle):
            league.admit(runs)
            stopped = league.play(stop, deadline)
        echo(f"stopped: {stopped}")
        return league.summary(stopped)
    finally:
        connection.close()


def table(summary: dict) -> str:
    """The rating table, as `hexzd ratings` prints it, with each player's run."""
    rows = summary["ratings"]
    width = max([len(r["run"] or "") for r in rows] + [3])
    lines = [f"{'player':<18} {'run':<{width}} {'rating':>7} {'95% CI':>17} {'games':>6} {'step':>7} {'PFLOP':>9}"]
    for r in rows:
        rating, ci, step, flops = scale.rating_cells(r)
        lines.append(
            f"{r['player']:<18} {r['run'] or '':<{width}} {rating} {ci:>17} {r['games']:6d} {step:>7} {flops:>9}"
        )
    return "\n".join(lines)
