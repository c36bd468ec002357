"""An HTP engine around OpenSpiel's C++ MCTSBot: an opponent nobody here wrote.

Usage: python -m hexzd.benchmarks.openspiel_htp [--sims N] [--seed K]  (needs the `bench` extra)

Only what a referee needs: boardsize, clear_board, play, genmove, name,
version, protocol_version, list_commands, known_command, quit. Its cell
names are parsed here, not with hexzd's notation, so that a referee bug in
naming cannot cancel out. Black joins top to bottom and moves first, as in
OpenSpiel's `hex` (player 0); an action is row * n + column.
"""

import argparse
import sys

import pyspiel

COMMANDS = (
    "boardsize",
    "clear_board",
    "genmove",
    "known_command",
    "list_commands",
    "name",
    "play",
    "protocol_version",
    "quit",
    "version",
)


class Engine:
    def __init__(self, sims: int, seed: int):
        self.sims, self.seed = sims, seed
        self.new_game(11)

    def new_game(self, n: int) -> None:
        self.n = n
        self.game = pyspiel.load_game("hex", {"board_size": n})
        self.state = self.game.new_initial_state()
        evaluator = pyspiel.RandomRolloutEvaluator(1, self.seed)
        self.bot = pyspiel.MCTSBot(self.game, evaluator, 2.0, self.sims, 1000, False, self.seed, False)

    def cell(self, name: str) -> int:
        column, row = ord(name[0].lower()) - ord("a"), int(name[1:]) - 1
        if not (0 <= column < self.n and 0 <= row < self.n):
            raise ValueError(f"{name} is off the board")
        return row * self.n + column

    def name_of(self, action: int) -> str:
        return f"{chr(ord('a') + action % self.n)}{action // self.n + 1}"

    def player(self, colour: str) -> int:
        return {"b": 0, "black": 0, "w": 1, "white": 1}[colour.lower()]

    def handle(self, command: str, args: list[str]) -> str:
        if command == "boardsize":
            self.new_game(int(args[0]))
        elif command == "clear_board":
            self.new_game(self.n)
        elif command == "play":
            if self.state.is_terminal() or self.state.current_player() != self.player(args[0]):
                raise ValueError("not that colour's turn")
            action = self.cell(args[1])
            if action not in self.state.legal_actions():
                raise ValueError("illegal move")
            self.state.apply_action(action)
        elif command == "genmove":
            if self.state.is_terminal() or self.state.current_player() != self.player(args[0]):
                raise ValueError("not that colour's turn")
            action = self.bot.step(self.state)
            self.state.apply_action(action)
            return self.name_of(action)
        elif command == "name":
            return "openspiel-mcts"
        elif command == "version":
            return f"{self.sims} simulations"
        elif command == "protocol_version":
            return "2"
        elif command == "list_commands":
            return "\n".join(COMMANDS)
        elif command == "known_command":
            return "true" if args and args[0] in COMMANDS else "false"
        elif command != "quit":
            raise ValueError("unknown command")
        return ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    engine = Engine(options.sims, options.seed)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            answer = "= " + engine.handle(words[0], words[1:])
        except (ValueError, IndexError, KeyError) as e:
            answer = f"? {e}"
        sys.stdout.write(answer.rstrip() + "\n\n")
        sys.stdout.flush()
        if words[0] == "quit":
            break


if __name__ == "__main__":
    main()
