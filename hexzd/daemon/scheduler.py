"""Which duel comes next, and the ratings that the duels' games give.

One duel at a time. The daemon writes it into the `duels` table and the
duel worker finds it there (the table is the queue: a restarted worker
resumes the open duel). A rating match goes first when one is due (every
`ratings.match_seconds`); otherwise a promotion duel for the newest snapshot
not yet dueled against the best.
"""

import asyncio
import time
from collections.abc import Callable

from hexzd.config import Config
from hexzd.evaluation import league
from hexzd.store.writes import Writer


class Scheduler:
    def __init__(self, store: Writer, config: Callable[[], Config]):
        self.store, self.config = store, config
        self.last_match = float("-inf")
        self.line = ""  # the open duel, for progress lines and status
        self.ratings_stale = False

    async def schedule(self, best: int | None) -> None:
        """Opens the next duel if none is open. Runs inside the caller's transaction."""
        if await self.store.duel_open():
            return
        r = self.config().ratings
        if r.match_seconds and time.monotonic() - self.last_match >= r.match_seconds:
            match = await self._next_match()
            if match is not None:
                self.last_match = time.monotonic()
                await self._open("rating", match, r.match_pairs)
                return
        candidate = await self.store.newest_unduelled()
        if candidate is not None:
            sims = self.config().duel.sims
            await self._open("promotion", league.Pairing(candidate, sims, best, sims), None)

    async def _open(self, kind: str, pairing: league.Pairing, pairs: int | None) -> None:
        duel_id = await self.store.new_duel(
            time.time(), kind, pairing.candidate_id, pairing.sims, pairing.opponent_id, pairing.opponent_sims, pairs
        )
        self.line = (
            f"{kind} {duel_id}: {league.player(pairing.candidate_id, pairing.sims)}"
            f" vs {league.player(pairing.opponent_id, pairing.opponent_sims)}"
        )

    async def _next_match(self) -> league.Pairing | None:
        """The reference ladder first; then the snapshot least rated, against its closest reference."""
        r, sims = self.config().ratings, self.config().duel.sims
        match = league.ladder_match(r.references, await self.store.ladder_games(), r.ladder_pairs)
        if match is not None:
            return match
        least = await self.store.least_rated()
        if least is None:
            return None
        model_id, rating = least
        opponent = league.closest_reference(r.references, rating, await self.store.reference_ratings())
        return league.Pairing(model_id, sims, None, opponent)

    async def ratings(self) -> list[tuple]:
        """Every player's rating refitted from all duel games, off the event loop."""
        self.ratings_stale = False
        results = await self.store.duel_results()
        return await asyncio.to_thread(league.rate, results, self.config().ratings.references)
