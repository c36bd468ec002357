"""Duels: a candidate snapshot against the current best, decided by an SPRT.

Games come in pairs: each opening (hexzd.evaluation.openings) is played
twice, the candidate Black in one game and White in the other. After the
opening both sides play greedily (no noise, the most visited move) with the
duel's fixed simulations. Every pair has an opening of its own, and the
same two players' later duels go on down the same list, so no pair repeats
another's games: the SPRT and the rating fit see independent pairs.

Each finished pair updates the SPRT on pair outcomes (0, 1 or 2 candidate
wins); the duel stops as soon as the test decides, abandoning the games still
in flight, or after `max_pairs` pairs, which counts as a rejection: the
candidate was not shown to be clearly stronger. A restarted duel worker
resumes a duel from the games already in the state file.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hexzd import store
from hexzd.evaluation.engines import EngineFailure, EnginePlayer
from hexzd.evaluation.openings import Openings, opening, pairing_seed
from hexzd.evaluation.perfect import PerfectPlayer
from hexzd.evaluation.scale import PERFECT, REFERENCE_SEARCH
from hexzd.evaluation.sprt import Sprt
from hexzd.game.notation import to_trmph
from hexzd.game.rules import BLACK, WHITE, Games
from hexzd.nn.loader import load
from hexzd.search.player import RESIGN, Player, subset


def pair_counts(results: dict[int, dict[int, bool]]) -> list[int]:
    """[pairs with 0, 1, 2 candidate wins] over the complete pairs."""
    counts = [0, 0, 0]
    for games in results.values():
        if len(games) == 2:
            counts[sum(games.values())] += 1
    return counts


def play_pairs(candidate: Player, opponent: Player, n: int, swap: bool, opening_moves, on_game, should_stop) -> None:
    """Plays each opening twice, colours swapped; on_game(index, trmph, winner, candidate colour).

    A player (an outside engine) that answers RESIGN loses that game there; its moves so far are its record.
    """
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
        resigned = moves == RESIGN
        games.play(np.where(resigned, -1, moves))
        games.resign(resigned)
        for b in np.flatnonzero(moves >= 0):
            actions[b].append(int(moves[b]))
        for b in np.flatnonzero(games.done & ~reported):
            reported[b] = True
            on_game(int(b), to_trmph(actions[b], n), int(games.winner[b]), int(colour[b]))
        if should_stop():
            return


def warm(n: int, swap: bool) -> None:
    """Plays a pair of tiny games, rollouts against a uniform network, so that the search
    kernels are compiled (or loaded from numba's cache) before any duel's CPU time is
    counted: matchmaking prices each kind of match by that time, and the first match of a
    fresh worker once cost 20 times the next (7x7, rollouts @200 against @100)."""

    def uniform(codes: np.ndarray):
        return np.zeros((len(codes), n * n), np.float32), np.zeros(len(codes), np.float32)

    play_pairs(Player(2), Player(2, uniform), n, swap, [()], lambda *game: None, lambda: False)


def load_player(db, model_id: int | None, sims: int, config, seed: int) -> Player:
    """A model of the state file at `sims` simulations, searching as self-play does without
    its noise; or, when model_id is None, the reference: rollout MCTS (REFERENCE_SEARCH)."""
    if model_id is None:
        return Player(sims, None, REFERENCE_SEARCH, seed)
    return Player(sims, load(db, model_id, config.device).evaluate, config.selfplay, seed)


@dataclass(frozen=True)
class DuelEnd:
    """A duel's verdict: accepted or rejected (promotion), played (rating match)."""

    result: str
    wins: int
    losses: int
    llr: float | None
    error: str = ""  # why an outside engine ended its rating match early: its games so far count


def engine_player(engines: dict[str, str], name: str, log_dir: Path | None) -> EnginePlayer:
    """Outside engine `name` of [ratings] engines, started. Raises EngineFailure."""
    if name not in engines:
        raise EngineFailure("no longer in [ratings] engines")
    return EnginePlayer(engines[name], log_path=log_dir / f"engine-{name}.log" if log_dir else None, name=name)


def play_duel(db, duel_id: int, config, seed: int, on_game, should_stop, log_dir: Path | None = None) -> DuelEnd | None:
    """Plays duel `duel_id` of the state file to its end; None if stopped before.

    A promotion duel ends when the SPRT decides (or at max_pairs, or when
    the openings run out: rejected); a rating match after its fixed number
    of pairs. The games already in the state file count, so a restarted
    worker resumes the duel. Each game goes to on_game(pair, trmph moves,
    winner, candidate colour) as it ends; should_stop() is polled once a move.

    A game the same two players already played with the same colours (a
    two-stone opening can be where another pair's game went anyway) is
    dropped: not passed on, and its pair never counts.

    An outside engine as the opponent (log_dir: where its stderr goes) that
    fails ends the match early, "played", with the reason in `error`.
    """
    with store.read_only(db) as connection:
        kind, candidate_id, sims, opponent_id, opponent_sims, match_pairs, engine = store.duel(connection, duel_id)
        played = store.duel_results(connection, duel_id)
        earlier = store.pairing_games(connection, duel_id)
    start, seen = _history(earlier, played)
    c, game = config.duel, config.game
    sprt = Sprt(c.elo0, c.elo1, c.alpha, c.beta)
    candidate = load_player(db, candidate_id, sims, config, seed)
    opponent = load_player(db, opponent_id, opponent_sims, config, seed + 1) if engine is None else None
    # The older network rates the openings' balance: in promotion duels the
    # best's, the same for every candidate; against rollouts or an engine the model's.
    nets = {m: p.evaluate for m, p in ((candidate_id, candidate), (opponent_id, opponent)) if m is not None}
    balance = nets[min(nets)] if nets else None
    openings = Openings(game.board_size, pairing_seed((candidate_id, sims), (opponent_id, opponent_sims)), balance)
    most = match_pairs if kind == "rating" else c.max_pairs
    # A rating match's pairs all go at once: its length is fixed, and a network's cost per
    # game falls with the batch (5x5, 64 sims: 0.28 CPU-s at 4 pairs in flight, 0.05 at 64).
    flight = match_pairs if kind == "rating" else c.pairs
    results: dict[int, dict[int, bool]] = {}
    for pair, colour, winner, _ in played:
        results.setdefault(pair, {})[colour] = winner == colour
    next_pair = max(results, default=-1) + 1
    exhausted = False

    def decision() -> str | None:
        counts = pair_counts(results)
        if kind == "rating":
            return "played" if sum(counts) >= most else None
        verdict = {"accept": "accepted", "reject": "rejected", None: None}[sprt.decide(counts)]
        return "rejected" if verdict is None and (sum(counts) >= most or exhausted) else verdict

    def stop() -> bool:
        return should_stop() or decision() is not None

    error = ""
    try:
        if engine == PERFECT:
            opponent = PerfectPlayer(game.board_size)  # its solver keeps what earlier matches solved
        elif engine is not None:
            opponent = engine_player(config.ratings.engines, engine, log_dir)
        while not should_stop() and decision() is None:
            batch = range(next_pair, next_pair + min(flight, max(1, most - sum(pair_counts(results)))))
            if kind == "promotion":  # on tiny boards the openings run out: a promotion never replays one
                batch = range(batch.start, min(batch.stop, _available(openings, start + batch.stop) - start))
                if not batch:
                    exhausted = True
                    break
            # A rating match on a board whose openings ran out (3x3 and smaller) goes round again.
            opening_moves = [opening(openings, start + pair) for pair in batch]

            def finished(b, moves, winner, colour, batch=batch):
                if (moves, colour) in seen:
                    return
                seen.add((moves, colour))
                pair = batch[b // 2]
                results.setdefault(pair, {})[colour] = winner == colour
                on_game(pair, moves, winner, colour)

            play_pairs(candidate, opponent, game.board_size, game.swap, opening_moves, finished, stop)
            next_pair = batch.stop
    except EngineFailure as e:  # a broken engine ends its match; the games it finished count
        error = f"engine {engine}: {e}"
    finally:
        if isinstance(opponent, EnginePlayer):
            opponent.close()
    verdict = "played" if error else decision()
    if verdict is None:
        return None
    counts = pair_counts(results)
    wins = sum(sum(g.values()) for g in results.values() if len(g) == 2)
    llr = float(sprt.llr(counts)) if kind == "promotion" else None
    return DuelEnd(verdict, wins, 2 * sum(counts) - wins, llr, error)


def _history(earlier, played) -> tuple[int, set]:
    """The pairing's first unused opening, and the (moves, candidate colour) of every game it played.

    Each earlier duel of the pairing used the openings up to its last pair.
    """
    last: dict[int, int] = {}
    for duel_id, pair, _, _ in earlier:
        last[duel_id] = max(last.get(duel_id, -1), pair)
    seen = {(moves, colour) for _, _, moves, colour in earlier} | {(moves, colour) for _, colour, _, moves in played}
    return sum(pair + 1 for pair in last.values()), seen


def _available(openings: Openings, wanted: int) -> int:
    """`wanted`, or fewer where the list of openings is shorter: rates only as many as needed."""
    try:
        openings[wanted - 1]
        return wanted
    except IndexError:
        return openings.count
