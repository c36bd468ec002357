"""Duels: a candidate snapshot against the current best, decided by an SPRT.

Hex's first player has a large advantage, so games come in pairs: each
opening is played twice, the candidate Black in one game and White in the
other. Openings are a balanced set: with `opening_plies = 1`, every first
move in turn (in an order shuffled per duel); with more plies, random moves.
After the opening both sides play greedily (no noise, the most visited move)
with the duel's fixed simulations.

Each finished pair updates the SPRT on pair outcomes (0, 1 or 2 candidate
wins); the duel stops as soon as the test decides, abandoning the games still
in flight, or after `max_pairs` pairs, which counts as a rejection: the
candidate was not shown to be clearly stronger. A restarted duel worker
resumes a duel from the games already in the state file.
"""
import numpy as np

from hexzd.daemon import messages as m
from hexzd import store
from hexzd.game.rules import BLACK, WHITE, Games
from hexzd.game.notation import to_trmph
from hexzd.search.player import Player, subset
from hexzd.evaluation.sprt import Sprt


def openings(n: int, plies: int, pairs: range, duel_id: int) -> list[list[int]]:
    """The opening moves of each pair: reproducible from the duel id."""
    nn = n * n
    plies = min(plies, nn // 3)  # never so deep that the opening decides a tiny board
    order = np.random.default_rng(duel_id).permutation(nn)
    result = []
    for pair in pairs:
        if plies == 1:
            result.append([int(order[pair % nn])])
        else:
            rng = np.random.default_rng((duel_id, pair))
            result.append([int(a) for a in rng.choice(nn, size=plies, replace=False)])
    return result


def pair_counts(results: dict[int, dict[int, bool]]) -> list[int]:
    """[pairs with 0, 1, 2 candidate wins] over the complete pairs."""
    counts = [0, 0, 0]
    for games in results.values():
        if len(games) == 2:
            counts[sum(games.values())] += 1
    return counts


def play_pairs(candidate: Player, opponent: Player, n: int, swap: bool, opening_moves,
               on_game, should_stop) -> None:
    """Plays each opening twice, colours swapped; on_game(index, trmph, winner, candidate colour)."""
    games = Games.new(2 * len(opening_moves), n, swap)
    colour = np.array([BLACK, WHITE] * len(opening_moves), np.int8)
    actions = [list(opening_moves[b // 2]) for b in range(games.batch)]
    for ply in range(max(len(o) for o in opening_moves)):
        games.play([a[ply] if ply < len(a) else -1 for a in actions])
    reported = np.zeros(games.batch, np.bool_)
    while not reported.all():
        moves = np.full(games.batch, -1, np.int64)
        for player, mine in ((candidate, games.to_play == colour), (opponent, games.to_play != colour)):
            index = np.flatnonzero(mine & ~games.done)
            if len(index):
                moves[index] = player.moves(subset(games, index))
        games.play(moves)
        for b in np.flatnonzero(moves >= 0):
            actions[b].append(int(moves[b]))
        for b in np.flatnonzero(games.done & ~reported):
            reported[b] = True
            on_game(b, to_trmph(actions[b], n), int(games.winner[b]), int(colour[b]))
        if should_stop():
            return


def load_player(db, model_id: int | None, sims: int, config, seed: int) -> Player:
    """A model of the state file at `sims` simulations, or rollout MCTS when model_id is None."""
    from hexzd.daemon.workers import load_evaluator

    evaluate = load_evaluator(db, model_id, config).evaluate if model_id is not None else None
    return Player(sims, evaluate, config.selfplay, seed)


def play_duel(link, db, duel_id: int, seed: int) -> None:
    """Plays duel `duel_id` to its end, pushing each game and the result.

    A promotion duel ends when the SPRT decides (or at max_pairs, rejected);
    a rating match after its fixed number of pairs.
    """
    with store.read_only(db) as connection:
        kind, candidate_id, sims, opponent_id, opponent_sims, match_pairs = connection.execute(
            "SELECT kind, candidate_id, sims, opponent_id, opponent_sims, pairs FROM duels WHERE id = ?",
            (duel_id,)).fetchone()
        played = connection.execute(
            "SELECT pair, candidate_colour, winner FROM duel_games WHERE duel_id = ?", (duel_id,)).fetchall()
    config = link.config
    c, game = config.duel, config.game
    sprt = Sprt(c.elo0, c.elo1, c.alpha, c.beta)
    most = match_pairs if kind == "rating" else c.max_pairs
    candidate = load_player(db, candidate_id, sims, config, seed)
    opponent = load_player(db, opponent_id, opponent_sims, config, seed + 1)
    results: dict[int, dict[int, bool]] = {}
    for pair, colour, winner in played:
        results.setdefault(pair, {})[colour] = winner == colour
    next_pair = max(results, default=-1) + 1

    def decision() -> str | None:
        counts = pair_counts(results)
        if kind == "rating":
            return "played" if sum(counts) >= most else None
        verdict = {"accept": "accepted", "reject": "rejected", None: None}[sprt.decide(counts)]
        return "rejected" if verdict is None and sum(counts) >= most else verdict

    def should_stop() -> bool:
        link.poll()
        return link.stopping or decision() is not None

    while not link.stopping and decision() is None:
        batch = range(next_pair, next_pair + min(c.pairs, max(1, most - next_pair)))
        opening_moves = openings(game.board_size, c.opening_plies, batch, duel_id)

        def on_game(b, moves, winner, colour, batch=batch):
            pair = batch[b // 2]
            results.setdefault(pair, {})[colour] = winner == colour
            link.send(m.DuelGame(duel_id=duel_id, pair=pair, moves=moves, winner=winner,
                                 candidate_colour=colour))

        play_pairs(candidate, opponent, game.board_size, game.swap, opening_moves, on_game, should_stop)
        next_pair = batch.stop
    verdict = decision()
    if verdict is not None:
        counts = pair_counts(results)
        wins = sum(sum(g.values()) for g in results.values() if len(g) == 2)
        llr = float(sprt.llr(counts)) if kind == "promotion" else None
        link.send(m.DuelEnd(duel_id=duel_id, result=verdict, wins=wins, losses=2 * sum(counts) - wins, llr=llr))
