"""numba kernels for Hex and batched MCTS: numpy arrays in, numpy arrays out.

Installed as `hexzd.native`. The validating Python layer is `hexzd.game.rules`
and `hexzd.search.mcts`; call the kernels through it.
"""
