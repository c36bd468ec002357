"""Explicit random number generators for the kernels.

Every game carries its own 64-bit xorshift* state in a `uint64[B]` array, as
in pynndescent. Results then depend only on the seed, never on how games are
split between threads or batches, and kernels stay free of hidden global state.
"""

import math

import numba
import numpy as np

_SCALE = 1.0 / 9007199254740992.0  # 2**-53: maps 53 random bits onto [0, 1)


@numba.njit(nogil=True, cache=True, inline="always")
def next_u64(state, i):
    """xorshift64*: advances state[i] and returns 64 random bits."""
    x = state[i]
    x ^= x >> numba.uint64(12)
    x ^= x << numba.uint64(25)
    x ^= x >> numba.uint64(27)
    state[i] = x
    return x * numba.uint64(2685821657736338717)


@numba.njit(nogil=True, cache=True, inline="always")
def uniform(state, i):
    """A float64 in [0, 1)."""
    return (next_u64(state, i) >> numba.uint64(11)) * _SCALE


@numba.njit(nogil=True, cache=True, inline="always")
def open_uniform(state, i):
    """A float64 in (0, 1), never 0 or 1, so that logs stay finite."""
    return ((next_u64(state, i) >> numba.uint64(11)) + 0.5) * _SCALE


@numba.njit(nogil=True, cache=True, inline="always")
def below(state, i, n):
    """An integer in [0, n), n < 2**32, by Lemire's multiply-shift.

    A multiply instead of a 64-bit modulo: the division was the largest cost
    of a random fill. The bias is below n / 2**32, under 1e-7 on 19x19.
    """
    x = next_u64(state, i) >> numba.uint64(32)
    return np.int64((x * numba.uint64(n)) >> numba.uint64(32))


@numba.njit(nogil=True, cache=True)
def normal(state, i):
    """A standard normal draw (Box-Muller)."""
    u1 = open_uniform(state, i)
    u2 = uniform(state, i)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@numba.njit(nogil=True, cache=True)
def gamma(state, i, alpha):
    """A Gamma(alpha, 1) draw (Marsaglia and Tsang 2000)."""
    if alpha < 1.0:
        # Boost: Gamma(a) = Gamma(a + 1) * U^(1/a).
        u = open_uniform(state, i)
        return gamma(state, i, alpha + 1.0) * u ** (1.0 / alpha)
    d = alpha - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = normal(state, i)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        u = open_uniform(state, i)
        if math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v):
            return d * v


@numba.njit(nogil=True, cache=True)
def gumbel(state, i):
    """A standard Gumbel draw."""
    return -math.log(-math.log(open_uniform(state, i)))


def seeds(count, seed):
    """`count` well-mixed, non-zero xorshift states from one integer seed."""
    ss = np.random.SeedSequence(seed)
    state = ss.generate_state(count, dtype=np.uint64)
    state[state == 0] = 0x9E3779B97F4A7C15  # xorshift must never hold zero
    return state
