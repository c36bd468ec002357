"""Matches: two players, paired games from one list of openings, and a policy
that says when the match ends. Its kinds (the `kind` of a row of `duels`):

    promotion duel  a candidate snapshot against the current best, decided by
                    an SPRT (PromotionDuel)
    rating match    two players of the rating ladder (snapshots, rollouts,
                    an outside engine, perfect play), a fixed number of pairs
                    (RatingMatch)

A perfect-play check (hexzd.evaluation.perfect) is not a match: it judges a
model's moves in solved positions, with no opponent and no games to pair.

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
from typing import Protocol

import numpy as np

from hexzd import store
from hexzd.evaluation.engines import EngineFailure, EnginePlayer
from hexzd.evaluation.openings import Openings, opening, pairing_seed
from hexzd.evaluation.outcome import MatchEnd
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


def engine_player(engines: dict[str, str], name: str, log_dir: Path | None) -> EnginePlayer:
    """Outside engine `name` of [ratings] engines, started. Raises EngineFailure."""
    if name not in engines:
        raise EngineFailure("no longer in [ratings] engines")
    return EnginePlayer(engines[name], log_path=log_dir / f"engine-{name}.log" if log_dir else None, name=name)


class Policy(Protocol):
    """What a kind of duel decides: how many pairs it plays and when it ends."""

    @property
    def flight(self) -> int: ...  # pairs in flight at once

    @property
    def most(self) -> int: ...  # the most pairs it plays

    @property
    def replays(self) -> bool: ...  # whether it goes round the openings again once they run out

    def decision(self, counts: list[int], exhausted: bool) -> str | None:
        """Its result on pair counts [0, 1, 2 candidate wins], or None to play on.

        exhausted: the openings ran out (only where it does not replay them)."""
        ...

    def llr(self, counts: list[int]) -> float | None:
        """The SPRT's log-likelihood ratio it reports, if it runs one."""
        ...


@dataclass(frozen=True)
class PromotionDuel:
    """SPRT until it decides; rejected after `most` pairs or once the openings run out
    (tiny boards): a promotion never replays an opening."""

    sprt: Sprt
    most: int
    flight: int
    replays = False

    def decision(self, counts: list[int], exhausted: bool) -> str | None:
        verdict = {"accept": "accepted", "reject": "rejected", None: None}[self.sprt.decide(counts)]
        return "rejected" if verdict is None and (sum(counts) >= self.most or exhausted) else verdict

    def llr(self, counts: list[int]) -> float | None:
        return float(self.sprt.llr(counts))


@dataclass(frozen=True)
class RatingMatch:
    """A fixed number of pairs, "played" once all are. They all go at once: a network's cost
    per game falls with the batch (5x5, 64 sims: 0.28 CPU-s at 4 pairs in flight, 0.05 at 64).
    On a board whose openings ran out (3x3 and smaller) it goes round them again."""

    pairs: int
    replays = True

    @property
    def most(self) -> int:
        return self.pairs

    @property
    def flight(self) -> int:
        return self.pairs

    def decision(self, counts: list[int], exhausted: bool) -> str | None:
        return "played" if sum(counts) >= self.pairs else None

    def llr(self, counts: list[int]) -> float | None:
        return None


def policy(kind: str, match_pairs: int, c) -> Policy:
    """The policy of a duel of `kind` ("promotion" or "rating", as the state file has it); c: [duel]."""
    if kind == "rating":
        return RatingMatch(match_pairs)
    return PromotionDuel(Sprt(c.elo0, c.elo1, c.alpha, c.beta), c.max_pairs, c.pairs)


class Tally:
    """A duel's games by pair, the candidate's result in each, and its decision under its policy."""

    def __init__(self, policy: Policy, played, seen: set):
        """played: store.duel_results, the games already stored; seen: every (moves, candidate
        colour) the pairing played, which no game may repeat."""
        self.policy, self.seen, self.exhausted = policy, seen, False
        self.results: dict[int, dict[int, bool]] = {}
        for pair, colour, winner, _ in played:
            self.results.setdefault(pair, {})[colour] = winner == colour

    def counts(self) -> list[int]:
        return pair_counts(self.results)

    def decision(self) -> str | None:
        return self.policy.decision(self.counts(), self.exhausted)

    def add(self, pair: int, moves: str, winner: int, colour: int) -> bool:
        """Counts a game; False (not counted) for a repeat, whose pair then never counts."""
        if (moves, colour) in self.seen:
            return False
        self.seen.add((moves, colour))
        self.results.setdefault(pair, {})[colour] = winner == colour
        return True

    def end(self, error: str) -> MatchEnd | None:
        """The duel's end, or None while undecided (stopped); an engine's error ends it "played"."""
        verdict = "played" if error else self.decision()
        if verdict is None:
            return None
        counts = self.counts()
        wins = sum(sum(g.values()) for g in self.results.values() if len(g) == 2)
        return MatchEnd(
            result=verdict, wins=wins, losses=2 * sum(counts) - wins, llr=self.policy.llr(counts), error=error
        )


def play_match(
    db, duel_id: int, config, seed: int, on_game, should_stop, log_dir: Path | None = None
) -> MatchEnd | None:
    """Plays match `duel_id` (a row of `duels`) of the state file to its end; None if stopped before.

    A promotion duel ends when the SPRT decides (or at max_pairs, or when
    the openings run out: rejected); a rating match after its fixed number
    of pairs (see PromotionDuel, RatingMatch). The games already in the state
    file count, so a restarted worker resumes the duel. Each game goes to
    on_game(pair, trmph moves, winner, candidate colour) as it ends;
    should_stop() is polled once a move.

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
    tally = Tally(policy(kind, match_pairs, config.duel), played, seen)
    candidate = load_player(db, candidate_id, sims, config, seed)
    opponent = load_player(db, opponent_id, opponent_sims, config, seed + 1) if engine is None else None
    # The older network rates the openings' balance: in promotion duels the
    # best's, the same for every candidate; against rollouts or an engine the model's.
    nets = {m: p.evaluate for m, p in ((candidate_id, candidate), (opponent_id, opponent)) if m is not None}
    key = pairing_seed((candidate_id, sims), (opponent_id, opponent_sims))
    openings = Openings(config.game.board_size, key, nets[min(nets)] if nets else None)
    error = ""
    try:
        if engine == PERFECT:
            opponent = PerfectPlayer(config.game.board_size)  # its solver keeps what earlier matches solved
        elif engine is not None:
            opponent = engine_player(config.ratings.engines, engine, log_dir)
        _play(tally, candidate, opponent, openings, start, config.game, on_game, should_stop)
    except EngineFailure as e:  # a broken engine ends its match; the games it finished count
        error = f"engine {engine}: {e}"
    finally:
        if isinstance(opponent, EnginePlayer):
            opponent.close()
    return tally.end(error)


def _play(tally: Tally, candidate, opponent, openings: Openings, start: int, game, on_game, should_stop) -> None:
    """Plays batches of pairs until the duel decides or should_stop(); the pairing's
    openings from `start` on, each pair's game to on_game once it counts."""
    next_pair = max(tally.results, default=-1) + 1

    def stop() -> bool:
        return should_stop() or tally.decision() is not None

    while not should_stop() and tally.decision() is None:
        batch = _batch(tally.policy, next_pair, sum(tally.counts()), openings, start)
        if not batch:
            tally.exhausted = True
            break
        opening_moves = [opening(openings, start + pair) for pair in batch]

        def finished(b, moves, winner, colour, batch=batch):
            if tally.add(batch[b // 2], moves, winner, colour):
                on_game(batch[b // 2], moves, winner, colour)

        play_pairs(candidate, opponent, game.board_size, game.swap, opening_moves, finished, stop)
        next_pair = batch.stop


def _batch(policy: Policy, next_pair: int, done: int, openings: Openings, start: int) -> range:
    """The next pairs to play, `done` pairs complete; empty once the openings ran out
    for a policy that does not replay them."""
    batch = range(next_pair, next_pair + min(policy.flight, max(1, policy.most - done)))
    if policy.replays:
        return batch
    return range(batch.start, min(batch.stop, _available(openings, start + batch.stop) - start))


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
