"""Which duel comes next, and the ratings that the duels' games give.

At most one promotion duel and one rating match are open at a time. The
daemon writes them into the `duels` table and the duel worker finds them
there (the table is the queue: a restarted worker resumes the open duels).
A promotion duel for the newest snapshot not yet dueled against the best
opens as soon as the last one ends. Rating matches, chosen by information
(hexzd.evaluation.scale.next_match), get `ratings.share` of the CPU time
that duels and rating matches took so far (the duels' cpu_seconds), and all
of it while no candidate waits. The worker keeps that share within a match
too: a promotion duel that opens while a rating match is under way runs
inside it unless ratings are owed CPU time, the match's so far counted
(see hexzd.daemon.workers.duel), so a candidate never waits for a whole
match. The duel worker's CPU share of the machine (evaluation.cpu_share) bounds
them all.

A promotion duel waits, though, while the newest promoted snapshot's 95%
interval is wider than `ratings.target_elo`, for at most `duel.rating_wait`
of the run's time so far (and MAX_RATING_WAIT): the gate is mild, and without
the wait it promoted near-equal networks every half minute on 5x5, each of
which needs about 185 even games for +-50 Elo, faster than a fifth of the
machine can rate them. With the wait, promotions come at most a factor
1 / (1 - rating_wait) later in the run than the one before (every 1.33x at
0.25): early in a run, while the networks improve fastest, the wait is
short; the rating matches take the whole evaluation share while it lasts.
It is on by default (0.25): measured against off, it narrowed the intervals
2-3x on 5x5 and 7x7 at no strength cost the seeds' spread could show (docs/results.md,
"precise ratings first"). The wait is given up, with an event, once the rating
matches' pace since the promotion shows that the interval cannot reach the
target in the time left (an interval narrows as 1/sqrt(games)): on 7x7 a 2-core
machine never reached +-50, so every candidate sat out the full 10 minutes while
self-play played an older network.

Outside engines ([ratings] engines) are rating opponents like any other. One
that failed (the duel worker names it in the match's end) is not chosen again
until its command line in config.toml changes, or the daemon restarts.

A match in which the duel worker crashes MATCH_CRASHES times (counted in the
state file, over restarts) is given up, with the reason in `duels.failed`,
and evaluation goes on with the next: the duel worker says which match it is
in (MatchStart), and a crash counts against the innermost. The models and
engines of a rating match given up are not chosen for rating matches again,
and a ladder match given up counts as played. A model's check against
perfect play (Checking) is given up the same way, in `perfect_play_crashes`,
so that a check which kills the worker does not crash-loop it.

Each reference of [ratings] references counts once, in its first place: a
reference twice would be a ladder match of a player against itself.
"""

import asyncio
import time
from collections.abc import Callable

from hexzd.config import Config
from hexzd.evaluation import scale
from hexzd.evaluation.throttle import ratings_due
from hexzd.store.writes import Writer

MAX_RATING_WAIT = 600.0  # seconds: the longest a promotion duel waits for a rating, however old the run
PACE_AFTER = 60.0  # seconds of waiting before the rating matches' pace may say the target is out of reach
MATCH_CRASHES = 3  # crashes of the duel worker in one match, after which the match is given up


class Scheduler:
    def __init__(self, store: Writer, config: Callable[[], Config], age: Callable[[], float]):
        """age(): the run's wall-clock seconds so far, over all its restarts."""
        self.store, self.config, self.age = store, config, age
        self.waiting = ""  # why a candidate is not dueled yet, for progress lines and status
        self.open: dict[int, str] = {}  # the open duels, for progress lines and status
        self.ratings_stale = False
        self.broken: dict[str, str] = {}  # engine name -> the command line that failed
        # What the duel worker is in, innermost last: ("match", duel id) from MatchStart, and
        # ("check", model id) from Checking (a promotion duel runs inside a check or a match).
        self.playing: list[tuple[str, int]] = []
        self.crash: str | None = None  # how the duel worker's last crash went, until it is back
        self.gave_up: int | None = None  # the promoted model whose rating the promotion no longer waits for

    def references(self) -> list[int]:
        """[ratings] references, each once (in its first place)."""
        return list(dict.fromkeys(self.config().ratings.references))

    @property
    def line(self) -> str:
        checks = [f"model {key} against perfect play" for kind, key in self.playing if kind == "check"]
        return "; ".join([*checks, *self.open.values(), *([self.waiting] if self.waiting else [])])

    async def schedule(self, best: int | None) -> None:
        """Opens a rating match and a promotion duel where none of that kind is open.
        Runs inside the caller's transaction."""
        r, open_kinds = self.config().ratings, await self.store.open_duel_kinds()
        candidate = await self.store.newest_unduelled()
        self.waiting = await self._rating_first() if candidate is not None and "promotion" not in open_kinds else ""
        if self.waiting:
            candidate = None  # not dueled yet: the rating matches take the whole share meanwhile
        spent = await self.store.evaluation_seconds()  # {kind: CPU seconds}
        if "rating" not in open_kinds and r.share and (candidate is None or ratings_due(spent, r.share)):
            match = await self._next_match()
            if match is not None:
                await self._open("rating", *match)
        if "promotion" not in open_kinds and candidate is not None:
            sims = self.config().duel.sims
            await self._open("promotion", scale.Pairing(candidate, sims, best, sims), None)

    async def _rating_first(self) -> str:
        """Why the next promotion duel waits for the newest promoted snapshot's rating, or ""
        if it need not: that snapshot's 95% interval is within ratings.target_elo, or it has
        waited duel.rating_wait of the run's age (or MAX_RATING_WAIT) since its promotion."""
        c = self.config()
        newest = await self.store.newest_promotion()
        if newest is None or not (c.duel.rating_wait and c.ratings.share):
            return ""
        model_id, at, half, rated, since = newest
        f, waited = c.duel.rating_wait, time.time() - at
        # The wait ends when waited >= f * age; both grow with the clock, so f * age - waited
        # shrinks by 1 - f a second.
        left = min((f * self.age() - waited) / (1 - f), MAX_RATING_WAIT - waited)
        if (half is not None and half <= c.ratings.target_elo) or left <= 0 or model_id == self.gave_up:
            return ""
        interval = "unrated" if half is None else f"+-{half:.0f}"
        if waited >= PACE_AFTER and _out_of_reach(half, c.ratings.target_elo, rated, since / waited, left):
            self.gave_up = model_id
            await self.store.add_event(
                time.time(),
                "info",
                "scheduler",
                f"promotion stops waiting for model {model_id}'s rating: at {since / waited * 60:.0f} rated"
                f" games a minute, its interval ({interval}) cannot reach +-{c.ratings.target_elo:g}"
                f" in the {left:.0f} s left",
            )
            return ""
        return f"promotion waits {left:.0f} s for model {model_id}'s rating ({interval})"

    def ended(self, duel_id: int) -> None:
        self.open.pop(duel_id, None)
        self.playing = [p for p in self.playing if p != ("match", duel_id)]

    def started(self, duel_id: int) -> None:
        self.playing.append(("match", duel_id))

    def checking(self, model_id: int, done: bool) -> None:
        """The duel worker began (done: ended) model_id's check against perfect play."""
        self.playing = [p for p in self.playing if p != ("check", model_id)]
        if not done:
            self.playing.append(("check", model_id))

    def crashed(self, code: int, log: str) -> None:
        """The duel worker crashed: counted against its innermost match once the worker is
        back (`restarted`), when every message it sent before the crash is in."""
        self.crash = f"exit code {code}, see {log}"

    async def restarted(self, best: int | None) -> tuple[str, str] | None:
        """The duel worker is up (its hello). After a crash inside a match or a check against
        perfect play, the crash counts against it, and the MATCH_CRASHES-th gives it up.
        Returns the event to tell (level, message), or None. Runs inside the caller's transaction."""
        crash, playing, self.crash, self.playing = self.crash, self.playing, None, []
        if crash is None or not playing:
            return None
        kind, key = playing[-1]
        if kind == "check":
            return await self._check_crashed(key, crash)
        duel_id = key
        crashes = await self.store.match_crashed(duel_id)
        if crashes is None:
            return None  # it ended meanwhile
        if crashes < MATCH_CRASHES:
            return "warning", f"the duel worker crashed in match {duel_id} ({crash}): {crashes} of {MATCH_CRASHES}"
        reason = f"the duel worker crashed in it {crashes} times (the last: {crash})"
        await self.store.fail_duel(time.time(), duel_id, reason)
        self.ended(duel_id)
        self.ratings_stale = True
        await self.schedule(best)
        return "error", f"match {duel_id} given up: {reason}; evaluation goes on with the next"

    async def _check_crashed(self, model_id: int, crash: str) -> tuple[str, str]:
        crashes = await self.store.check_crashed(model_id)
        if crashes < MATCH_CRASHES:
            return "warning", (
                f"the duel worker crashed in model {model_id}'s check against perfect play ({crash}):"
                f" {crashes} of {MATCH_CRASHES}"
            )
        reason = f"the duel worker crashed in it {crashes} times (the last: {crash})"
        await self.store.fail_check(model_id, reason)
        return "error", f"model {model_id}'s check against perfect play given up: {reason}; evaluation goes on"

    async def _open(self, kind: str, pairing: scale.Pairing, pairs: int | None) -> None:
        p = pairing
        duel_id = await self.store.new_duel(
            time.time(), kind, p.candidate_id, p.sims, p.opponent_id, p.opponent_sims, pairs, p.opponent_engine
        )
        self.open[duel_id] = (
            f"{kind} {duel_id}: {scale.player(p.candidate_id, p.sims)}"
            f" vs {scale.player(p.opponent_id, p.opponent_sims, p.opponent_engine)}"
        )

    def engines(self) -> list[str]:
        """The configured outside engines, less those whose command line in force has failed."""
        return [name for name, command in self.config().ratings.engines.items() if self.broken.get(name) != command]

    def engine_failed(self, name: str) -> str:
        """Takes engine `name` out of matchmaking until its command line changes; says so."""
        command = self.config().ratings.engines.get(name)
        if command is None:
            return "it is no longer in [ratings] engines"
        self.broken[name] = command
        return "not chosen again until its command line in [ratings] engines changes"

    async def _next_match(self) -> tuple[scale.Pairing, int] | None:
        """The next rating match and its pairs: neighbouring references until each two
        played `ladder_pairs` pairs (in matches of that length: they come first, when
        nothing else is rated); then the match of `match_pairs` pairs that narrows the
        intervals that matter most per second."""
        r, sims, perfect, references = self.config().ratings, self.config().duel.sims, self.perfect(), self.references()
        ladder, failed = await self.store.ladder_games(), await self.store.failed_ratings()
        for candidate, c_sims, opponent, o_sims, engine in failed:  # a ladder match given up counts as played
            if candidate is None and opponent is None:
                key = (c_sims, engine or o_sims)
                ladder[key] = max(ladder.get(key, 0), 2 * r.ladder_pairs)
        match = scale.ladder_match(references, ladder, r.ladder_pairs, perfect)
        if match is not None:
            return match, r.ladder_pairs
        left_out = {player for row in failed for player in (row[0], row[2], row[4]) if player is not None}
        results, promoted = await self.store.duel_results(), await self.store.promoted()
        promoted = [model for model in promoted if model not in left_out]
        costs = scale.seconds_per_game(await self.store.rating_match_times())
        engines = [engine for engine in self.engines() if engine not in left_out]

        def choose():
            s = scale.scale(results, references, [(m, sims) for m in promoted], engines, perfect)
            games = 2 * r.match_pairs
            return scale.next_match(
                s, references, promoted, sims, games, costs, r.target_elo, engines=engines, perfect=perfect
            )

        match = await asyncio.to_thread(choose)
        return None if match is None else (match, r.match_pairs)

    async def ratings(self) -> list[tuple]:
        """Every player's rating refitted from all duel games, off the event loop."""
        self.ratings_stale = False
        results = await self.store.duel_results()
        return await asyncio.to_thread(scale.rate, results, self.references(), self.perfect())

    def perfect(self) -> bool:
        """Whether perfect play tops the ladder now ([ratings] perfect is live)."""
        c = self.config()
        return scale.has_perfect(c.game.board_size, c.game.swap, c.ratings.perfect)


def _out_of_reach(half: float | None, target: float, rated: int, pace: float, left: float) -> bool:
    """Whether a snapshot rated +-half on `rated` games cannot reach a 95% interval of +-target
    in `left` seconds at `pace` rated games a second: intervals narrow as 1/sqrt(games). Unknown
    (so not out of reach) while it is unrated or no rating game has ended since its promotion."""
    if half is None or pace <= 0:
        return False
    return rated * ((half / target) ** 2 - 1) > pace * left
