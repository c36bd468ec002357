"""The game of Hex: the validating rules over the board kernels, notation, game records."""
