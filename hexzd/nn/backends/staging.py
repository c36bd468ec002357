"""The host side of the bucketed device backends (cuda, tensorrt): batch buckets and pinned buffers."""

import threading

import numpy as np
import torch

from hexzd.nn.backends.base import _check
from hexzd.nn.net import NetSpec

__all__ = ["BUCKETS"]

# The batch sizes that CUDA graphs are captured for; a batch runs padded up to
# the next one. Finer than powers of two, so that padding runs at most 7 rows
# more below 16, 15 up to 128, 63 up to 1024 and 255 up to 4096 (a third of
# a bucket at worst from 64 on, instead of half): 1 2 4 8, multiples of 16 to
# 128, of 64 to 1024, of 256 to 4096, 38 graphs in all. Larger batches run in
# chunks of 4096.
BUCKETS = (1, 2, 4, 8) + tuple(range(16, 129, 16)) + tuple(range(192, 1025, 64)) + tuple(range(1280, 4097, 256))


def _bucket(batch: int, buckets: tuple[int, ...] = BUCKETS) -> int:
    """The smallest bucket that holds `batch` rows (the largest for a larger batch, which runs in chunks)."""
    return next((b for b in buckets if b >= batch), buckets[-1])


def _in_buckets(codes: np.ndarray, run, largest: int = BUCKETS[-1]) -> tuple[np.ndarray, np.ndarray]:
    """Runs `run(chunk)` over chunks of at most `largest` rows and joins the results."""
    parts = [run(codes[i : i + largest]) for i in range(0, len(codes), largest)]
    if not parts:
        return run(codes)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class _Staged:
    """The host side of the bucketed device backends (cuda, tensorrt).

    One host buffer each for the codes, logits and values, sized for the
    largest bucket and pinned, so that the copies to and from the device are
    asynchronous DMA: a call writes its rows into the input buffer, `_launch`
    copies them up, runs its bucket (the rows past the batch hold whatever an
    earlier call left there: positions of their own, never read back), copies
    the batch's rows of the outputs down and waits for them once; the caller
    gets copies, since the next call overwrites the buffers. A lock makes an
    evaluator safe to share between threads (they take turns); threads that
    want to overlap use an evaluator each.
    """

    spec: NetSpec  # set by the backend's constructor

    def _stage_buffers(self, buckets: tuple[int, ...], pin: bool) -> None:
        nn_ = self.spec.board_size**2
        self.buckets, largest = buckets, buckets[-1]
        self._host_in = torch.zeros(largest, nn_ + 1, dtype=torch.uint8, pin_memory=pin)
        self._host_logits = torch.zeros(largest, nn_, dtype=torch.float32, pin_memory=pin)
        self._host_values = torch.zeros(largest, dtype=torch.float32, pin_memory=pin)
        self._in_np, self._logits_np, self._values_np = (
            t.numpy() for t in (self._host_in, self._host_logits, self._host_values)
        )
        self._lock = threading.Lock()

    def evaluate(self, codes):
        codes = _check(codes, self.spec)
        with self._lock:
            return _in_buckets(codes, self._run_chunk, self.buckets[-1])

    def _run_chunk(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = len(codes)
        bucket = _bucket(b, self.buckets)
        self._in_np[:b] = codes
        self._launch(b, bucket)
        return self._logits_np[:b].copy(), self._values_np[:b].copy()

    def _launch(self, b: int, bucket: int) -> None:
        """Host rows [:b] of the input -> the bucket's run on the device -> host rows [:b] of logits and values."""
        raise NotImplementedError
