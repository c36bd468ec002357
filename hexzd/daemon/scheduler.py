"""Which duel comes next, and the ratings that the duels' games give.

One duel at a time. The daemon writes it into the `duels` table and the
duel worker finds it there (the table is the queue: a restarted worker
resumes the open duel). Rating matches, chosen by information
(hexzd.evaluation.scale.next_match), get `ratings.share` of the CPU time
that duels and rating matches took so far (the duels' cpu_seconds), and all
of it while no candidate waits; otherwise a promotion duel for the newest
snapshot not yet dueled against the best goes next. The duel worker's CPU
share of the machine (duel.cpu_share) bounds them all.

Outside engines ([ratings] engines) are rating opponents like any other. One
that failed (the duel worker names it in the match's end) is not chosen again
until its command line in config.toml changes, or the daemon restarts.
"""

import asyncio
import time
from collections.abc import Callable

from hexzd.config import Config
from hexzd.evaluation import scale
from hexzd.store.writes import Writer


class Scheduler:
    def __init__(self, store: Writer, config: Callable[[], Config]):
        self.store, self.config = store, config
        self.line = ""  # the open duel, for progress lines and status
        self.ratings_stale = False
        self.broken: dict[str, str] = {}  # engine name -> the command line that failed

    async def schedule(self, best: int | None) -> None:
        """Opens the next duel if none is open. Runs inside the caller's transaction."""
        if await self.store.duel_open():
            return
        r = self.config().ratings
        candidate = await self.store.newest_unduelled()
        spent = await self.store.evaluation_seconds()  # {kind: CPU seconds}
        behind = spent.get("rating", 0.0) <= r.share * sum(spent.values())
        if r.share and (candidate is None or behind):
            match = await self._next_match()
            if match is not None:
                await self._open("rating", match, r.match_pairs)
                return
        if candidate is not None:
            sims = self.config().duel.sims
            await self._open("promotion", scale.Pairing(candidate, sims, best, sims), None)

    async def _open(self, kind: str, pairing: scale.Pairing, pairs: int | None) -> None:
        p = pairing
        duel_id = await self.store.new_duel(
            time.time(), kind, p.candidate_id, p.sims, p.opponent_id, p.opponent_sims, pairs, p.opponent_engine
        )
        self.line = (
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

    async def _next_match(self) -> scale.Pairing | None:
        """Neighbouring references until each pair played `ladder_pairs` pairs; then the
        match that narrows the intervals that matter most per second."""
        r, sims, perfect = self.config().ratings, self.config().duel.sims, self.perfect()
        match = scale.ladder_match(r.references, await self.store.ladder_games(), r.ladder_pairs, perfect)
        if match is not None:
            return match
        results, promoted = await self.store.duel_results(), await self.store.promoted()
        costs = scale.seconds_per_game(await self.store.rating_match_times())
        engines = self.engines()

        def choose():
            s = scale.scale(results, r.references, [(m, sims) for m in promoted], engines, perfect)
            games = 2 * r.match_pairs
            return scale.next_match(
                s, r.references, promoted, sims, games, costs, r.target_elo, engines=engines, perfect=perfect
            )

        return await asyncio.to_thread(choose)

    async def ratings(self) -> list[tuple]:
        """Every player's rating refitted from all duel games, off the event loop."""
        self.ratings_stale = False
        results = await self.store.duel_results()
        return await asyncio.to_thread(scale.rate, results, self.config().ratings.references, self.perfect())

    def perfect(self) -> bool:
        """Whether perfect play tops the ladder now ([ratings] perfect is live)."""
        c = self.config()
        return scale.has_perfect(c.game.board_size, c.game.swap, c.ratings.perfect)
