"""The headless progress line's budget and rating: what the run has spent and has left of each
budget set, and the best model's rating with its interval or why it has none.

The figures are worked out by hand from the counters and budgets given; the rating is read
through the daemon's own connection from a real state file, and must be that of the model's
player with the most games, as `models.rating` is."""

import asyncio
import sqlite3

from states import add_model

from hexzd import store
from hexzd.config import BudgetConfig
from hexzd.daemon.ticks import budget_text, rating_text
from hexzd.store.writes import Writer

COUNTERS = {"games": 1234.0, "positions": 20_000.0, "selfplay_flops": 2.0e12, "train_flops": 0.5e12}


def test_spent_is_always_told_and_left_only_for_the_budgets_set():
    assert budget_text(BudgetConfig(), COUNTERS, 3725.9, None) == "spent 01:02:05, 1,234 games, 0.0025 PFLOP"


def test_what_is_left_of_each_budget_set():
    budget = BudgetConfig(hours=2.0, games=5000, positions=50_000, pflops=0.01)
    assert budget_text(budget, COUNTERS, 3725.9, 600.4) == (
        "spent 01:02:05, 1,234 games, 0.0025 PFLOP;"
        " left 00:10:00 of --for, 00:57:54, 3,766 games, 30,000 positions, 0.0075 PFLOP"
    )


def test_a_budget_overrun_by_the_last_tick_has_nothing_left():
    budget = BudgetConfig(hours=1.0, games=1000, pflops=0.001)
    assert budget_text(budget, COUNTERS, 3725.9, -3.0) == (
        "spent 01:02:05, 1,234 games, 0.0025 PFLOP; left 00:00:00 of --for, 00:00:00, 0 games, 0 PFLOP"
    )


def rated(tmp_path, rows) -> list:
    """The rating_of of models 1, 2 and 3 after `rows` (player, model_id, sims, rating, lo, hi, games)."""
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    for _ in range(3):
        add_model(db, board_size=3)
    with sqlite3.connect(db) as c:
        c.executemany("INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0)", rows)

    async def read():
        writer = Writer(await store.writer(db))
        try:
            return [await writer.rating_of(model) for model in (1, 2, 3)]
        finally:
            await writer.close()

    return asyncio.run(read())


def test_the_best_models_rating_is_its_most_played_players_with_its_interval(tmp_path):
    ratings = rated(
        tmp_path,
        [
            ("model 1 @64", 1, 64, 212.4, 178.0, 246.0, 60),  # 60 games: this one; +-34
            ("model 1 @800", 1, 800, 350.0, 100.0, 600.0, 8),
            ("model 2 @64", 2, 64, 90.0, -80.0, 260.0, 12),  # +-170: wider than +-150
        ],
    )
    assert [rating_text(r) for r in ratings] == ["212 ±34 (95%)", "too few games", "not rated yet"]
