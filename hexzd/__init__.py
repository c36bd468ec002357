"""hexzd: a single-machine AlphaZero trainer for the game of Hex."""

__version__ = "0.1.0"
