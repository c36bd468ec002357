"""`hexzd match`: a referee between two HTP engines, as gogui-twogtp is for Go.

This is how hexzd's agents are judged from outside: `hexzd htp` against
MoHex, or against any other engine that speaks HTP.

    engines   two command lines, A and B, each started once and kept for
              the whole match (`clear_board` between games); their stderr
              goes to a log file, not the terminal
    games     in pairs: each opening is played twice, A Black in one game
              and White in the other, so the first player's advantage
              cancels. Openings as in duels (hexzd/evaluation/openings.py): every first
              move in a shuffled order (`plies` 1), random moves, or none
    referee   the referee keeps its own board and decides each game itself:
              a stone that joins the engine's edges wins; `resign`, an
              illegal or unreadable move, an error answer, a timeout, an
              answer too long (hexzd.evaluation.engines.HtpClient) or an
              engine that dies loses the game for that engine. An engine
              that failed so is stopped; a stopped or dead engine is started
              again for the next game. Every engine started is closed at
              the end, however the match ends
    names     each engine's answers to `name` and `version`, asked once it has
              started, after `boardsize` (so that `hexzd htp` says whether its
              network plays that board); an engine that answers neither has none
    result    A's score with a 95% interval over pairs, as Elo, A's wins and
              losses with each colour, and each game's moves (trmph) in the
              optional record (JSON lines)

Swap is off: both engines are told nothing about it, and `swap` is illegal.
"""

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hexzd.evaluation.engines import COLOUR, EngineFailure, HtpClient, read_move, set_up
from hexzd.evaluation.openings import Openings, opening
from hexzd.evaluation.stats import elo_or_none, wilson
from hexzd.game.notation import cell_name, to_trmph
from hexzd.game.rules import BLACK, WHITE, Games, IllegalMove
from hexzd.search.player import RESIGN

__all__ = ["EngineFailure", "HtpClient", "GameResult", "engine_name", "referee_match", "summary"]


@dataclass
class GameResult:
    game: int
    pair: int
    black: str  # "A" or "B"
    opening: str  # trmph
    moves: str = ""  # trmph, the opening included
    winner: str = ""  # "A" or "B"
    reason: str = ""  # connected, or how the loser lost: resign, illegal move, timeout, ...
    seconds: dict = field(default_factory=lambda: {"A": 0.0, "B": 0.0})


def _genmove(engine: HtpClient, colour: int, games: Games, timeout: float) -> tuple[int | None, str]:
    """The engine's move, or None and why it lost."""
    try:
        answer = engine.ask(f"genmove {COLOUR[colour]}", timeout)
    except EngineFailure as e:
        return None, str(e)
    try:
        action = read_move(answer, games.n)
        if action == RESIGN:
            return None, "resigned"
        games.play([action])  # swap is off: `swap-pieces` is illegal here
    except (ValueError, IllegalMove) as e:
        return None, f"illegal move {answer!r}: {e}"
    return action, ""


def play_game(
    engines: dict, a_colour: int, n: int, opening: list[int], result: GameResult, timeout: float
) -> GameResult:
    """One game refereed on the referee's own board; `engines` maps "A"/"B" to HtpClient."""
    side = {a_colour: "A", BLACK + WHITE - a_colour: "B"}
    games, actions = Games.new(1, n), list(opening)
    for action in opening:
        games.play([action])
    for name, engine in engines.items():
        try:
            set_up(engine, n, opening, timeout)
        except EngineFailure as e:  # an engine that cannot even start the game loses it
            return _finish(result, actions, n, winner=_other(name), reason=f"{name}: {e}")
    while not games.done[0]:
        colour = int(games.to_play[0])
        name = side[colour]
        started = time.monotonic()
        action, why = _genmove(engines[name], colour, games, timeout)
        result.seconds[name] += time.monotonic() - started
        if action is None:
            return _finish(result, actions, n, winner=_other(name), reason=f"{name} {why}")
        actions.append(action)
        if games.done[0]:
            break
        other = _other(name)
        try:
            engines[other].ask(f"play {COLOUR[colour]} {cell_name(action, n)}", timeout)
        except EngineFailure as e:
            return _finish(result, actions, n, winner=name, reason=f"{other}: {e}")
    return _finish(result, actions, n, winner=side[int(games.winner[0])], reason="connected")


def _other(name: str) -> str:
    return "B" if name == "A" else "A"


def _finish(result: GameResult, actions: list[int], n: int, winner: str, reason: str) -> GameResult:
    result.moves, result.winner, result.reason = to_trmph(actions, n), winner, reason
    return result


def engine_name(engine: HtpClient, n: int, timeout: float) -> str:
    """The engine's `name` and `version` answers on an n x n board, "" where it gives neither."""
    answers = []
    for command in (f"boardsize {n}", "name", "version"):
        try:
            answer = engine.ask(command, timeout)
        except EngineFailure:  # an optional command: refused, it says nothing; a broken engine is stopped
            if not engine.alive:
                break
            continue
        if not command.startswith("boardsize") and answer:
            answers.append(answer)
    return " ".join(answers)


def referee_match(
    command_a: str,
    command_b: str,
    n: int,
    games: int,
    plies: int = 1,
    seed: int = 0,
    timeout: float = 60.0,
    log_dir: Path | None = None,
    on_game=None,
    on_start=None,
) -> list[GameResult]:
    """Plays `games` games (rounded up to whole pairs) and returns them in order; on_start gets
    the engines' names ({"A": ..., "B": ...}, `engine_name`) before the first game."""
    pairs = math.ceil(games / 2)
    commands = {"A": command_a, "B": command_b}
    logs = {k: (log_dir / f"engine-{k}.log" if log_dir else None) for k in commands}
    engines: dict[str, HtpClient] = {}
    results = []
    try:  # every engine started is closed, however this ends: B that cannot start leaves no A behind
        for k, command in commands.items():
            engines[k] = HtpClient(command, logs[k])
        names = {k: engine_name(engine, n, timeout) for k, engine in engines.items()}
        if on_start:
            on_start(names)
        openings = Openings(n, seed, fewest=plies) if plies else None
        for pair in range(pairs):
            moves = opening(openings, pair) if openings else []
            for a_colour in (BLACK, WHITE):
                for k, engine in engines.items():
                    if not engine.alive:  # it died in the last game, which it lost: a fresh one
                        engine.close()
                        engines[k] = HtpClient(commands[k], logs[k])
                result = GameResult(len(results), pair, "A" if a_colour == BLACK else "B", to_trmph(moves, n))
                results.append(play_game(engines, a_colour, n, moves, result, timeout))
                if on_game:
                    on_game(results[-1])
    finally:
        for engine in engines.values():
            engine.close()
    return results


def summary(results: list[GameResult]) -> dict:
    """A's score, with its 95% Wilson interval, and as Elo (None where unbounded)."""
    a_wins = sum(r.winner == "A" for r in results)
    score = a_wins / len(results) if results else float("nan")
    lo, hi = wilson(a_wins, len(results))
    return {
        "games": len(results),
        "a_wins": a_wins,
        "b_wins": len(results) - a_wins,
        "a_wins_as_black": sum(r.winner == "A" and r.black == "A" for r in results),
        "a_wins_as_white": sum(r.winner == "A" and r.black == "B" for r in results),
        "a_losses_as_black": sum(r.winner == "B" and r.black == "A" for r in results),
        "a_losses_as_white": sum(r.winner == "B" and r.black == "B" for r in results),
        "score": score,
        "score_lo": lo,
        "score_hi": hi,
        "elo": elo_or_none(score),
        "elo_lo": elo_or_none(lo),
        "elo_hi": elo_or_none(hi),
        "resigned": {k: sum(r.reason == f"{k} resigned" for r in results) for k in "AB"},
        "forfeits": {
            k: sum(r.winner != k and r.reason.startswith(k) and r.reason != f"{k} resigned" for r in results)
            for k in "AB"
        },
    }


def write_record(path: Path, result: GameResult) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(asdict(result)) + "\n")
