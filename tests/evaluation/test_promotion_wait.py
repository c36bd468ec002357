"""A promotion duel waits for the newest promoted snapshot's rating (duel.rating_wait):
the daemon's own Scheduler on a real state file, the wait's end read back from its duels."""

import asyncio
import sqlite3
import time

from states import add_model

from hexzd import store
from hexzd.config import Config
from hexzd.daemon.scheduler import MAX_RATING_WAIT, Scheduler
from hexzd.store.writes import Writer


def config(rating_wait: float) -> Config:
    return Config.model_validate(
        {
            "game": {"board_size": 4},
            "duel": {"rating_wait": rating_wait},
            "ratings": {"references": [100], "perfect": False, "target_elo": 50.0},
        }
    )


def schedule(db, rating_wait: float, age: float) -> tuple[str, set]:
    """One scheduling pass with a run `age` seconds old: the scheduler's line, and the kinds of duel it opened."""

    async def run():
        writer = Writer(await store.writer(db))
        scheduler = Scheduler(writer, lambda: config(rating_wait), lambda: age)
        await writer.begin()
        await scheduler.schedule(best=1)
        await writer.commit()
        await writer.close()
        return scheduler.line

    line = asyncio.run(run())
    with sqlite3.connect(db) as c:
        kinds = {kind for (kind,) in c.execute("SELECT kind FROM duels WHERE result IS NULL")}
        c.execute("DELETE FROM duels")
    return line, kinds


def promoted_ago(db, seconds: float, half: float | None) -> None:
    """Model 1 promoted `seconds` ago with a 95% half-width `half` (None: unrated); model 2 a candidate."""
    with sqlite3.connect(db) as c:
        c.execute("UPDATE promotions SET at = ? WHERE model_id = 1", (time.time() - seconds,))
        lo, hi = (None, None) if half is None else (-half, half)
        c.execute("UPDATE models SET rating = 0, rating_lo = ?, rating_hi = ? WHERE id = 1", (lo, hi))


def test_a_promotion_duel_waits_for_the_newest_snapshots_rating_within_its_share_of_the_run(tmp_path):
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    add_model(db, 4)
    add_model(db, 4, promoted=False)

    # Promoted 100 s into a 1,000 s run's last 100 s, unrated: at 0.25 it may wait until 25% of the
    # run has passed since (it then waits (250 - 100) / 0.75 = 200 s more); the rating match takes the share.
    promoted_ago(db, 100, None)
    line, kinds = schedule(db, 0.25, 1000)
    assert kinds == {"rating"}
    assert "promotion waits 200 s for model 1's rating (unrated)" in line

    promoted_ago(db, 100, 80.0)  # rated, but wider than +-50: still waits
    line, kinds = schedule(db, 0.25, 1000)
    assert kinds == {"rating"} and "(+-80)" in line

    promoted_ago(db, 100, 49.0)  # within the target: the duel opens at once
    line, kinds = schedule(db, 0.25, 1000)
    assert "promotion" in kinds and "model 2 @64 vs model 1 @64" in line and "waits" not in line

    promoted_ago(db, 260, None)  # waited past 25% of the run: the duel opens unrated
    assert "promotion" in schedule(db, 0.25, 1000)[1]
    promoted_ago(db, 100, None)  # no wait asked
    assert "promotion" in schedule(db, 0.0, 1000)[1]
    promoted_ago(db, MAX_RATING_WAIT + 1, None)  # however old the run, never over MAX_RATING_WAIT
    assert "promotion" in schedule(db, 0.25, 100_000)[1]
    promoted_ago(db, MAX_RATING_WAIT - 60, None)
    line, kinds = schedule(db, 0.25, 100_000)
    assert kinds == {"rating"} and "waits 60 s" in line


def rated_since(db, model_id: int, half: float, rated: int, games: int, seconds: float) -> None:
    """Model `model_id` promoted `seconds` ago, +-half on `rated` games, of which `games` came
    from one rating match played since its promotion."""
    promoted_ago(db, seconds, half)
    now = time.time()
    with sqlite3.connect(db) as c:
        c.execute(
            "INSERT OR REPLACE INTO ratings VALUES (?, ?, 64, 0, ?, ?, ?, 0, ?)",
            (f"model {model_id} @64", model_id, -half, half, rated, now),
        )
        c.execute(
            "INSERT INTO duels (kind, candidate_id, sims, opponent_sims, pairs, started_at, finished_at,"
            " wins, losses, result) VALUES ('rating', ?, 64, 100, 8, ?, ?, ?, ?, 'played')",
            (model_id, now - seconds + 1, now, games // 2, games - games // 2),
        )


def test_the_wait_is_given_up_when_the_pace_of_rating_games_cannot_reach_the_target(tmp_path):
    """+-80 on 100 games needs 100 * ((80/50)^2 - 1) = 156 more for +-50. 120 s after the
    promotion of a 1,000 s run it may wait (250 - 120) / 0.75 = 173 s more."""
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    add_model(db, 4)
    add_model(db, 4, promoted=False)

    rated_since(db, 1, 80.0, 100, 240, 120)  # 2 games a second: 156 games in 78 s, it waits
    line, kinds = schedule(db, 0.25, 1000)
    assert kinds == {"rating"} and "promotion waits 173 s for model 1's rating (+-80)" in line

    rated_since(db, 1, 80.0, 100, 20, 120)  # 1/6 a second: 156 games take 936 s, so it does not
    line, kinds = schedule(db, 0.25, 1000)
    assert "promotion" in kinds and "waits" not in line
    with sqlite3.connect(db) as c:
        (said,) = c.execute("SELECT message FROM events WHERE source = 'scheduler'").fetchone()
    assert said == (
        "promotion stops waiting for model 1's rating: at 10 rated games a minute, its interval (+-80)"
        " cannot reach +-50 in the 173 s left"
    )

    rated_since(db, 1, 80.0, 100, 20, 30)  # the same pace, too soon to judge it: it waits
    assert schedule(db, 0.25, 1000)[1] == {"rating"}
