"""The trainer: sources, bad data, window, pacing, resume, and learning solved positions.

References are independent of hexzd: positions are rebuilt here in plain
Python (`canonical`), and tiny boards are labelled by the brute-force solver
in tests/solver.py.
"""

import sqlite3
import threading

import numpy as np
import pytest
import torch
from solver import to_play_of, winner, winning_moves, wins

from hexzd import store
from hexzd.config import Config, TrainConfig
from hexzd.game.records import GameRecord
from hexzd.game.rules import Games
from hexzd.nn.snapshot import Snapshot
from hexzd.train.sources import RecordFile, SqliteGames, record_to_json, write_records
from hexzd.train.trainer import Trainer, Window, learning_rate

CPU = {"trainer": "cpu", "trainer_threads": 1}


def config(n=4, **train) -> Config:
    train = {"min_positions": 1, "batch_size": 16, **train}
    return Config.model_validate(
        {"game": {"board_size": n}, "model": {"blocks": 1, "channels": 8}, "train": train, "device": CPU}
    )


def canonical(cells, n: int, to_play: int) -> np.ndarray:
    """The planes the network should see, by the rules in DESIGN.md: the mover
    connects top to bottom, so White's boards are transposed."""
    board = np.array(cells).reshape(n, n)
    if to_play == 2:
        board = board.T
    planes = np.zeros((4, n, n), np.float32)
    planes[0] = board == to_play
    planes[1] = board == 3 - to_play
    planes[2] = 1
    return planes


def canonical_index(action: int, n: int, to_play: int) -> int:
    return action if to_play == 1 else (action % n) * n + action // n


def random_games(n: int, count: int, seed: int) -> list[tuple[GameRecord, list, np.ndarray]]:
    """(record, actions, visit distributions) of games of random play."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        games, actions, policies = Games.new(1, n), [], []
        while not games.done[0]:
            legal = games.legal()[0]
            policy = np.zeros(legal.shape, np.float32)
            policy[legal] = rng.dirichlet(np.ones(legal.sum()))
            actions.append(int(rng.choice(len(policy), p=policy / policy.sum())))
            policies.append(policy)
            games.play(actions[-1:])
        policies = np.array(policies)
        out.append((GameRecord.from_arrays(n, actions, policies, games.winner[0]), actions, policies))
    return out


def reference_positions(n: int, actions, policies, won_by: int):
    """Planes, policy targets and values of a game, replayed in plain Python."""
    cells, planes, targets, values = [0] * (n * n), [], [], []
    for t, action in enumerate(actions):
        to_play = 1 if t % 2 == 0 else 2
        planes.append(canonical(cells, n, to_play))
        target = np.zeros(n * n, np.float32)
        for a in range(n * n):
            target[canonical_index(a, n, to_play)] = policies[t, a]
        targets.append(target / target.sum())
        values.append(1.0 if to_play == won_by else -1.0)
        cells[action] = to_play
    return np.array(planes), np.array(targets), np.array(values, np.float32)


# ---------------------------------------------------------------- sources and bad data


def test_games_become_the_positions_a_plain_replay_gives(tmp_path):
    games = random_games(4, 6, seed=1)
    write_records(tmp_path / "games.jsonl", [g[0] for g in games])
    trainer = Trainer(config(), RecordFile(tmp_path / "games.jsonl"))
    added = trainer.poll()
    planes, targets, values = (
        np.concatenate(x)
        for x in zip(*(reference_positions(4, actions, policies, record.winner) for record, actions, policies in games))
    )
    assert added == trainer.window.seen == len(values)
    assert np.array_equal(trainer.window.planes[:added], planes)
    assert np.allclose(trainer.window.policy[:added], targets, atol=2e-3)
    assert np.array_equal(trainer.window.value[:added], values)


def bad_records(n: int) -> list[str]:
    """One JSON line per kind of damage, each from a good game."""
    ((good, actions, policies),) = random_games(n, 1, seed=2)
    repeated = GameRecord(n, good.moves[:2] * 2 + good.moves[4:], good.winner, good.policy)
    other_winner = GameRecord(n, good.moves, 3 - good.winner, good.policy)
    unfinished = GameRecord.from_arrays(n, actions[:-1], policies[:-1], good.winner)
    ((small, _, _),) = random_games(n - 1, 1, seed=3)
    corrupt = GameRecord(n, good.moves, good.winner, b"not zlib")
    lines = [record_to_json(r) for r in (repeated, other_winner, unfinished, small, corrupt)]
    return lines + ["{not json", '{"board_size": 4}']


def test_bad_records_are_reported_and_skipped_and_training_goes_on(tmp_path, caplog):
    path = tmp_path / "games.jsonl"
    good = random_games(4, 3, seed=4)
    write_records(path, [good[0][0]])
    with open(path, "a") as f:
        f.write("\n".join(bad_records(4)) + "\n")
    write_records(path, [g[0] for g in good[1:]])
    trainer = Trainer(config(), RecordFile(path))
    added = trainer.poll()
    assert trainer.skipped == 7
    assert added == sum(len(g[1]) for g in good)
    for reason in ("illegal", "winner", "before the game is decided", "4x4 run", "decompress", "unreadable"):
        assert reason in caplog.text
    losses = trainer.train_step()
    assert np.isfinite(losses["policy_loss"]) and np.isfinite(losses["value_loss"])


def test_a_line_still_being_written_waits_for_its_end(tmp_path):
    path = tmp_path / "games.jsonl"
    (record, _, _), (other, _, _) = random_games(3, 2, seed=5)
    text = record_to_json(other)
    write_records(path, [record])
    with open(path, "a") as f:
        f.write(text[:10])
    source = RecordFile(path)
    assert [r.moves for r in source.read(10)] == [record.moves]
    with open(path, "a") as f:
        f.write(text[10:] + "\n")
    assert [r.moves for r in source.read(10)] == [other.moves]
    assert source.read(10) == []


def insert(db, records) -> None:
    with sqlite3.connect(db) as c:
        c.executemany(
            "INSERT INTO games(model_id, created_at, board_size, sims, moves, winner, length, policy, evals, worker)"
            " VALUES (?, 0, ?, ?, ?, ?, ?, ?, 0, 'test')",
            [(r.model_id, r.board_size, r.sims, r.moves, r.winner, len(r.actions), r.policy) for r in records],
        )
    c.close()


def test_the_state_file_is_read_read_only_and_only_new_games(tmp_path):
    db = tmp_path / "run.sqlite"
    store.prepare(db)  # a state file: its readers refuse any other SQLite file
    records = [g[0] for g in random_games(4, 5, seed=6)]
    insert(db, records[:3])
    source = SqliteGames(db)
    assert [r.moves for r in source.read(100)] == [r.moves for r in records[:3]]
    assert source.read(100) == [] and source.cursor == 3
    insert(db, records[3:])
    assert [r.moves for r in source.read(1)] == [records[3].moves]
    assert [r.moves for r in source.read(100)] == [records[4].moves]
    assert [r.moves for r in source.history(2)] == [records[1].moves, records[0].moves]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        source.connection.execute("DELETE FROM games")
    source.close()


# ---------------------------------------------------------------- window, pacing, schedule


def test_sampling_rotates_half_the_draws_by_180_degrees():
    window = Window(4, 3)
    planes = np.zeros((1, 4, 3, 3), np.uint8)
    planes[0, 0, 0, 1] = 1  # one stone at b1; rotated, it is at b3
    policy = np.zeros((1, 9), np.float32)
    policy[0, 2] = 1.0
    window.add(planes, policy, np.ones(1, np.float32))
    drawn, targets, _ = window.sample(400, np.random.default_rng(0))
    rotated = drawn[:, 0, 2, 1] == 1
    assert np.array_equal(rotated, drawn[:, 0, 0, 1] == 0)
    assert np.array_equal(targets[:, 6] == 1, rotated) and np.array_equal(targets[:, 2] == 1, ~rotated)
    assert abs(rotated.sum() - 200) <= 3 * np.sqrt(400 * 0.25)  # 3 sigma of Binomial(400, 1/2)


def test_the_window_keeps_the_newest_positions():
    window = Window(5, 2)
    for first in range(0, 12, 3):  # positions 0..11, three at a time
        values = np.arange(first, first + 3, dtype=np.float32)
        window.add(np.zeros((3, 4, 2, 2), np.uint8), np.ones((3, 4), np.float32), values)
    assert sorted(window.value) == [7, 8, 9, 10, 11]
    assert sorted(window.resized(3).value) == [9, 10, 11]
    wider = window.resized(8)
    assert wider.size == 5 and list(wider.value[:5]) == [7, 8, 9, 10, 11]
    wider.add(np.zeros((4, 4, 2, 2), np.uint8), np.ones((4, 4), np.float32), np.arange(12, 16, dtype=np.float32))
    assert sorted(wider.value) == list(range(8, 16)) and wider.size == 8


def test_steps_follow_the_reuse_target(tmp_path):
    path = tmp_path / "games.jsonl"
    games = random_games(4, 12, seed=7)
    write_records(path, [g[0] for g in games[:2]])
    trainer = Trainer(config(batch_size=8, reuse=2.0, min_positions=40, snapshot_every=2), RecordFile(path))
    trainer.poll()
    assert trainer.window.seen < 40 and trainer.steps_due() == 0
    write_records(path, [g[0] for g in games[2:]])
    trainer.poll()
    due = int(2.0 * trainer.window.seen) // 8
    assert trainer.steps_due() == due > 4
    snapshots = []
    trainer.run(max_steps=due, on_snapshot=lambda snapshot, seconds: snapshots.append(snapshot))
    assert trainer.step == due and trainer.steps_due() == 0
    # One every snapshot_every steps, and one at the end for the steps since the last.
    assert [s.step for s in snapshots] == list(range(2, due + 1, 2)) + ([due] if due % 2 else [])
    assert snapshots[-1].train_flops == 3 * trainer.flops_per_eval * 8 * snapshots[-1].step
    stop = threading.Event()
    waiting = threading.Thread(target=trainer.run, kwargs={"should_stop": stop.is_set, "wait": stop.wait})
    waiting.start()  # starved: it waits for games instead of stepping
    waiting.join(0.2)
    stop.set()
    waiting.join(5)
    assert not waiting.is_alive() and trainer.step == due


def test_a_flood_of_games_owes_at_most_reuse_passes_over_the_window(tmp_path):
    """Positions that left the window cannot be trained on: their share of the target is forgiven."""
    path = tmp_path / "games.jsonl"
    games = random_games(4, 60, seed=9)
    write_records(path, [g[0] for g in games[:50]])
    trainer = Trainer(config(batch_size=8, reuse=2.0, window=40), RecordFile(path))
    trainer.poll()
    assert trainer.window.seen > 200 and trainer.window.size == 40
    assert trainer.steps_due() == int(2.0 * 40) // 8  # not 2 * seen / 8
    trainer.run(max_steps=trainer.steps_due())
    assert trainer.steps_due() == 0
    before = trainer.window.seen
    write_records(path, [g[0] for g in games[50:51]])
    trainer.poll()
    new = trainer.window.seen - before
    assert 0 < new < 40 and trainer.steps_due() == int(2.0 * new) // 8  # new games are owed in full
    resumed = Trainer(trainer.config, RecordFile(path), Snapshot.from_bytes(trainer.snapshot().to_bytes()))
    assert resumed.samples_forgiven == trainer.samples_forgiven > 0
    assert resumed.steps_due() == trainer.steps_due()


def test_learning_rate_warms_up_then_follows_the_schedule():
    cosine = TrainConfig(lr=1.0, warmup_steps=10, decay_steps=100, lr_final=0.1, lr_schedule="cosine")
    assert learning_rate(0, cosine) == pytest.approx(0.1)
    assert learning_rate(9, cosine) == pytest.approx(1.0)
    assert learning_rate(60, cosine) == pytest.approx(0.55)  # halfway down the cosine
    assert learning_rate(110, cosine) == learning_rate(10_000, cosine) == pytest.approx(0.1)
    constant = cosine.model_copy(update={"lr_schedule": "constant"})
    assert learning_rate(4, constant) == pytest.approx(0.5) and learning_rate(5000, constant) == 1.0


# ---------------------------------------------------------------- snapshots and resume


def weights(trainer: Trainer) -> list[torch.Tensor]:
    return [t.clone() for t in trainer.model.state_dict().values()]


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_resuming_from_a_snapshot_gives_bit_identical_steps(tmp_path, optimizer):
    path = tmp_path / "games.jsonl"
    games = [g[0] for g in random_games(4, 24, seed=8)]
    write_records(path, games[:6])
    with open(path, "a") as f:
        f.write("{damaged\n")  # inside the window the resumed trainer rebuilds
    write_records(path, games[6:])
    cfg = config(window=40, optimizer=optimizer, warmup_steps=2)  # 40 positions: the ring wraps

    first = Trainer(cfg, RecordFile(path))
    first.poll(limit=10)
    for _ in range(3):
        first.train_step()
    window = [a.copy() for a in (first.window.planes, first.window.policy, first.window.value)]
    blob = first.snapshot().to_bytes()
    first.poll(limit=2)  # fewer positions than the window: the rebuilt part is still sampled
    after = [first.train_step() for _ in range(3)]

    second = Trainer(cfg, RecordFile(path), Snapshot.from_bytes(blob))
    assert second.step == 3
    assert all(
        np.array_equal(a, b) for a, b in zip(window, (second.window.planes, second.window.policy, second.window.value))
    )
    second.poll(limit=2)
    assert [second.train_step() for _ in range(3)] == after
    assert all(torch.equal(a, b) for a, b in zip(weights(first), weights(second)))


def test_a_snapshot_of_another_network_shape_is_refused(tmp_path):
    blob = Trainer(config(), RecordFile(tmp_path / "none")).snapshot().to_bytes()
    wider = config().model_copy(update={"model": config().model.model_copy(update={"channels": 16})})
    with pytest.raises(ValueError, match="not this run's"):
        Trainer(wider, RecordFile(tmp_path / "none"), Snapshot.from_bytes(blob))


# ---------------------------------------------------------------- learning solved positions


def solved_positions(n: int, count: int, max_stones: int, seed: int):
    """Distinct positions labelled by the solver: (planes, policy target, value, winning indices).

    The target is uniform over the winning moves, or over all moves where
    every move loses. Positions equal up to the 180-degree rotation count
    as one, so that augmentation cannot leak held-out positions into training.
    """
    rng = np.random.default_rng(seed)
    seen, out = set(), []
    for _ in range(count * 20):
        if len(out) == count:
            break
        cells = [0] * (n * n)
        for i, x in enumerate(rng.permutation(n * n)[: rng.integers(0, max_stones + 1)]):
            cells[x] = 1 if i % 2 == 0 else 2
        cells = tuple(cells)
        if winner(cells, n):
            continue
        to_play = to_play_of(cells)
        planes = canonical(cells, n, to_play)
        key = min(planes.tobytes(), planes[:, ::-1, ::-1].tobytes())
        if key in seen:
            continue
        seen.add(key)
        good = winning_moves(cells, n, to_play)
        assert bool(good) == wins(cells, n, to_play)
        moves = good or [x for x in range(n * n) if cells[x] == 0]
        target = np.zeros(n * n, np.float32)
        target[[canonical_index(x, n, to_play) for x in moves]] = 1.0 / len(moves)
        out.append((planes, target, 1.0 if good else -1.0, [canonical_index(x, n, to_play) for x in good]))
    return out


def check_learns(n: int, count: int, max_stones: int, steps: int, blocks: int):
    """Trains on 80% of the solved positions and checks the other 20%.

    The positions go straight into the window: games from the empty board
    cannot carry them, since a game's result labels a position truly only
    when the winner played perfectly from there on.
    """
    data = solved_positions(n, count, max_stones, seed=0)
    order = np.random.default_rng(1).permutation(len(data))
    cut = int(0.8 * len(data))
    train, held_out = [data[i] for i in order[:cut]], [data[i] for i in order[cut:]]
    cfg = Config.model_validate(
        {
            "game": {"board_size": n},
            "model": {"blocks": blocks, "channels": 32},
            "train": {
                "batch_size": 128,
                "lr": 3e-3,
                "warmup_steps": 50,
                "decay_steps": steps,
                "lr_final": 0.05,
                "min_positions": 1,
                "reuse": 1e6,
            },
            "device": CPU,
        }
    )
    trainer = Trainer(cfg, RecordFile("/nonexistent"))
    trainer.window.add(*(np.array([d[k] for d in train]) for k in range(3)))
    for _ in range(steps):
        trainer.train_step()
    trainer.model.eval()
    with torch.no_grad():
        logits, values = trainer.model(torch.from_numpy(np.array([d[0] for d in held_out])))
    probabilities = torch.softmax(logits, 1).numpy()
    labels = np.array([d[2] for d in held_out])
    sign_right = np.mean(np.sign(values.numpy()) == labels)
    mass = [probabilities[i, d[3]].sum() for i, d in enumerate(held_out) if d[2] > 0]
    assert 0.6 < np.mean(labels > 0) < 0.9  # both kinds are there: a constant guess fails
    assert sign_right >= 0.95, f"value sign right on {sign_right:.1%} of held-out positions"
    assert np.mean(mass) >= 0.8, f"{np.mean(mass):.1%} of the policy on winning moves"


@pytest.mark.e2e  # a long trial: 600 steps, 10 s here
def test_learns_solved_3x3_positions():
    check_learns(3, 3000, 9, steps=600, blocks=2)


@pytest.mark.slow
def test_learns_solved_4x4_positions():
    check_learns(4, 8000, 12, steps=2000, blocks=3)
