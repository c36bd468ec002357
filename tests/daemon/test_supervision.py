"""Nothing silent, nothing lost: the daemon's loops are supervised, pause is state, and a
match that crashes the duel worker again and again is given up.

Real daemons, each for seconds: a failure is made real where it can be (a message that
raises, a standard output on a full disk, a snapshot whose weights do not load), and
injected where it cannot (HEXZD_TEST_FAIL_LOOPS, hexzd.daemon.supervisor.FAIL_LOOPS).
"""

import asyncio

from hexzd import store
from hexzd.config import Config
from hexzd.daemon.scheduler import Scheduler
from hexzd.store.writes import Writer


def test_a_reference_given_twice_counts_once(tmp_path):
    """[ratings] references = [100, 100, 200]: once a ladder match of rollouts @100 against
    themselves, whose games broke the ratings fit (and, unsupervised, the tick loop)."""
    db = tmp_path / "run.sqlite"
    config = Config()
    ratings = config.ratings.model_copy(update={"references": [100, 100, 200], "perfect": False})
    config = config.model_copy(update={"ratings": ratings})  # past validation, which refuses it now

    async def scenario():
        writer = Writer(await store.writer(db))
        try:
            scheduler = Scheduler(writer, lambda: config, lambda: 0.0)
            await writer.begin()
            await scheduler.schedule(None)
            await writer.commit()
            return scheduler
        finally:
            await writer.close()

    scheduler = asyncio.run(scenario())
    with store.read_only(db) as connection:
        opened = connection.execute("SELECT kind, candidate_id, sims, opponent_id, opponent_sims FROM duels").fetchall()
    assert opened == [("rating", None, 200, None, 100)]
    assert scheduler.references() == [100, 200]
