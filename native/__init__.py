"""numba kernels for Hex and batched MCTS: numpy arrays in, numpy arrays out.

Installed as `hexzd.native`. The validating Python layer is `hexzd.engine`
and `hexzd.search`; call the kernels through it.
"""
