"""The inference service: every request answered with its own rows, batched, and failures contained."""

import os
import threading
import time

import numpy as np
import pytest
import torch

from hexzd.nn.backends.base import sample_codes
from hexzd.nn.backends.eager import EagerEvaluator
from hexzd.nn.inference import build
from hexzd.nn.inference_service import InferenceService
from hexzd.nn.net import NetSpec


class Slow:
    """A real network behind a pause, so that requests pile up while it works; it logs its batch sizes."""

    def __init__(self, model, pause=0.02):
        self.reference, self.pause, self.sizes = EagerEvaluator(model), pause, []

    def evaluate(self, codes):
        self.sizes.append(len(codes))
        time.sleep(self.pause)
        return self.reference.evaluate(codes)


def model(seed: int, n: int = 4):
    torch.manual_seed(seed)
    return NetSpec(n, 1, 8).build().eval()


def test_requests_from_many_threads_are_batched_and_each_gets_its_own_rows():
    net = model(0)
    slow = Slow(net)
    service = InferenceService([slow], max_batch=64)
    requests = [sample_codes(4, 5, seed=s) for s in range(40)]
    answers = [None] * len(requests)

    def client(indices):
        for i in indices:
            answers[i] = service.submit(requests[i]).result()

    threads = [threading.Thread(target=client, args=(range(t, 40, 8),)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    service.close()
    reference = EagerEvaluator(net)
    for codes, (logits, values, seconds) in zip(requests, answers):
        want_logits, want_values = reference.evaluate(codes)  # one request alone, unbatched
        np.testing.assert_allclose(logits, want_logits, atol=1e-5)
        np.testing.assert_allclose(values, want_values, atol=1e-5)
        assert seconds > 0
    assert service.served == 200 and sum(slow.sizes) == 200
    assert max(slow.sizes) > 5  # requests that waited went out together...
    assert max(slow.sizes) <= 64  # ...within the largest batch


def test_an_evaluator_error_fails_its_batch_and_the_service_goes_on():
    class Flaky(Slow):
        def evaluate(self, codes):
            if len(codes) == 3:
                raise RuntimeError("out of memory")
            return super().evaluate(codes)

    service = InferenceService([Flaky(model(0), pause=0)])
    with pytest.raises(RuntimeError, match="out of memory"):
        service.submit(sample_codes(4, 3)).result()
    logits, values, _ = service.submit(sample_codes(4, 2)).result()
    assert logits.shape == (2, 16) and values.shape == (2,)
    service.close()


def test_a_swapped_network_answers_the_next_requests():
    old, new = model(0), model(1)
    service = InferenceService([EagerEvaluator(old), EagerEvaluator(old)])
    codes = sample_codes(4, 6, seed=9)
    service.swap([EagerEvaluator(new), EagerEvaluator(new)])
    logits, _ = service.evaluate(codes)
    np.testing.assert_allclose(logits, EagerEvaluator(new).evaluate(codes)[0], atol=1e-5)
    with pytest.raises(ValueError, match="2 evaluators"):
        service.swap([EagerEvaluator(new)])
    service.close()
    with pytest.raises(RuntimeError, match="closed"):
        service.submit(codes)


def test_an_inline_evaluator_runs_in_the_submitting_thread_and_is_counted():
    """The zero-cost benchmark's evaluator skips the hop to the service's thread; the counts still hold."""

    class Inline:
        inline = True

        def __init__(self):
            self.threads = []

        def evaluate(self, codes):
            self.threads.append(threading.get_ident())
            return np.zeros((len(codes), 16), np.float32), np.zeros(len(codes), np.float32)

    inline = Inline()
    service = InferenceService([inline])
    for rows in (3, 5):
        logits, values, _ = service.submit(sample_codes(4, rows, seed=rows)).result()
        assert logits.shape == (rows, 16) and values.shape == (rows,)
    service.close()
    assert inline.threads == [threading.get_ident()] * 2
    assert (service.served, service.batches) == (8, 2)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts the process's threads in /proc")
@pytest.mark.parametrize("backend", ["cpu", "eager"])
def test_the_service_thread_runs_the_network_on_the_process_s_torch_threads(backend):
    """torch.set_num_threads holds only for the thread that calls it: a service thread once ran
    an OpenMP thread per core, a second core next to the search's, whatever [device] threads said.
    With one torch thread, evaluating starts no thread of the operating system's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        evaluator = build(model(3, n=5), backend, "fp32")
        codes = sample_codes(5, 64, seed=1)
        service = InferenceService([evaluator])
        before = len(os.listdir("/proc/self/task"))
        service.evaluate(codes)
        after = len(os.listdir("/proc/self/task"))
        service.close()
        assert after == before
    finally:
        torch.set_num_threads(threads)
