"""State files for the tests: models written as the daemon writes them."""

import sqlite3
import time

from hexzd.evaluation.matches import play_match
from hexzd.nn.net import NetSpec, count_flops, count_params
from hexzd.nn.snapshot import Snapshot


def add_model(db, board_size, promoted=True, pruned=False, blocks=1, channels=8) -> int:
    """An untrained network's snapshot in the state file; its model id."""
    model = NetSpec(board_size, blocks=blocks, channels=channels).build()
    snapshot = Snapshot(model.spec, model.state_dict(), count_params(model), count_flops(model))
    with sqlite3.connect(db) as c:
        cursor = c.execute(
            "INSERT INTO models (created_at, train_step, positions_seen, samples_trained, params,"
            " flops_per_eval, selfplay_flops, train_flops, wall_seconds, accel_seconds,"
            " positions_generated, weights) VALUES (?, 0, 0, 0, ?, ?, 0, 0, 0, 0, 0, ?)",
            (time.time(), snapshot.params, snapshot.flops_per_eval, None if pruned else snapshot.to_bytes()),
        )
        if promoted:
            c.execute("INSERT INTO promotions (model_id, at) VALUES (?, ?)", (cursor.lastrowid, time.time()))
        return cursor.lastrowid


def play_stored(db, duel_id, config, seed=0, log_dir=None):
    """Plays a duel to its end as the duel worker does, storing each game; its games and its end."""
    games = []

    def on_game(pair, moves, winner, colour):
        games.append((pair, moves, winner, colour))
        with sqlite3.connect(db) as c:
            c.execute(
                "INSERT INTO duel_games (duel_id, pair, moves, winner, candidate_colour, created_at)"
                " VALUES (?, ?, ?, ?, ?, 0)",
                (duel_id, pair, moves, winner, colour),
            )

    end = play_match(db, duel_id, config, seed, on_game, lambda: False, log_dir)
    return games, end


def trained_snapshot(board_size: int, blocks: int, channels: int) -> tuple[bytes, bytes]:
    """A network's weights and its checkpoint (with AdamW's state after a step), the two blobs
    of the trainer's snapshot message."""
    import torch

    from hexzd.config import Config
    from hexzd.train.trainer import make_optimizer

    model = NetSpec(board_size, blocks=blocks, channels=channels).build()
    optimizer = make_optimizer(model, Config().train)
    model(torch.zeros(2, 4, board_size, board_size))[0].sum().backward()
    optimizer.step()
    checkpoint = Snapshot(model.spec, model.state_dict(), 0, 0, optimizer=optimizer.state_dict())
    return Snapshot(model.spec, model.state_dict(), 0, 0).to_bytes(), checkpoint.to_bytes()


def snapshot_made(weights: bytes, checkpoint: bytes, train_step: int = 1):
    """The trainer's message for a snapshot of these blobs."""
    from hexzd.daemon import messages as m

    counters = ("positions_seen", "samples_trained", "params", "flops_per_eval", "train_flops", "train_seconds")
    return m.SnapshotMade(train_step=train_step, weights=weights, checkpoint=checkpoint, **dict.fromkeys(counters, 0))


def game(model_id=None, **fields):
    """A self-play game's message: a 3x3 game of 7 moves, unless `fields` say otherwise."""
    from hexzd.daemon import messages as m

    played = {"board_size": 3, "sims": 2, "moves": "a1b1c1a2b2c2a3", "winner": 1, "length": 7, "policy": b"x"}
    return m.Game(**({"worker": "selfplay-0", "model_id": model_id, "evals": 0, "seconds": 0.0} | played | fields))
