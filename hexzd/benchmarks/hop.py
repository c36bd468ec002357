"""What a request costs to reach the network: the two designs of an inference service, side by side.

`hexzd bench selfplay` reports it, as the measurement behind hexzd.nn.inference_service's
choice of design:

- thread: the search thread hands its leaves to the service's thread in the
  same process (hexzd.nn.inference_service), which evaluates them and answers.
- process: the search process writes its leaves into shared memory and sends
  a ZeroMQ message over ipc to a server process, which evaluates them into
  shared memory and answers with another: the least a server process per
  accelerator, fed by many self-play processes, would cost.

Both run the same zero-cost evaluation on the same rows, one request at a
time, so what differs is the hop alone: microseconds of wall time and of CPU
(on both sides) per round trip.
"""

import multiprocessing
import shutil
import tempfile
import time
from multiprocessing import shared_memory

import numpy as np
import zmq

from hexzd.nn.inference_service import InferenceService

__all__ = ["hops"]

ROWS = 128  # a group's leaves: bench selfplay's 256 games in flight in two groups
WARM = 500


def _views(buffer, n: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The request (uint8 codes) and the answer (logits, then the value, per row) in one shared buffer."""
    x = np.ndarray((rows, n * n + 1), np.uint8, buffer)
    return x, np.ndarray((rows, n * n + 1), np.float32, buffer, offset=x.nbytes)


def _server(name: str, address: str, n: int, rows: int, evaluator) -> None:
    """The server process: evaluates the shared request on each message; reports its CPU time at the end."""
    memory = shared_memory.SharedMemory(name)
    x, answer = _views(memory.buf, n, rows)
    socket = zmq.Context().socket(zmq.PAIR)
    socket.connect(address)
    cpu = time.process_time()
    while socket.recv() != b"stop":
        logits, values = evaluator.evaluate(x)
        answer[:, :-1], answer[:, -1] = logits, values
        socket.send(b"")
    socket.send_string(repr(time.process_time() - cpu))
    del x, answer
    memory.close()


def _per_request(trip, requests: int) -> tuple[float, float]:
    """(wall, CPU of this process) in microseconds per call of trip()."""
    for _ in range(WARM):
        trip()
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(requests):
        trip()
    return (time.perf_counter() - start) / requests * 1e6, (time.process_time() - cpu) / requests * 1e6


def thread_hop(n: int, evaluator, requests: int) -> dict:
    x = np.zeros((ROWS, n * n + 1), np.uint8)
    service = InferenceService([evaluator])
    try:
        wall, cpu = _per_request(lambda: service.submit(x).result(), requests)
    finally:
        service.close()
    return {"wall_us": wall, "cpu_us": cpu}


def _client(socket, memory, n: int, requests: int, evaluator) -> tuple[float, float]:
    """The search side of process_hop: (wall, CPU) per round trip. Its views of the memory end with it.

    The last answer is checked against the evaluator's own: the server did the work.
    """
    x, answer = _views(memory.buf, n, ROWS)
    request = np.zeros_like(x)

    def trip():
        x[:] = request
        socket.send(b"")
        socket.recv()
        return answer[:, :-1].copy(), answer[:, -1].copy()

    timed = _per_request(trip, requests)
    logits, values = trip()
    want_logits, want_values = evaluator.evaluate(request)
    if not (np.array_equal(logits, want_logits) and np.array_equal(values, want_values)):
        raise RuntimeError("the server process answered other values than its evaluator gives")
    return timed


def process_hop(n: int, evaluator, requests: int) -> dict:
    size = ROWS * (n * n + 1) * 5  # uint8 codes, then float32 answers
    memory = shared_memory.SharedMemory(create=True, size=size)
    socket = zmq.Context.instance().socket(zmq.PAIR)
    address = f"ipc://{tempfile.mkdtemp(prefix='hexzd-hop-')}/socket"
    socket.bind(address)
    server = multiprocessing.get_context("spawn").Process(
        target=_server, args=(memory.name, address, n, ROWS, evaluator), daemon=True
    )
    server.start()
    try:
        wall, cpu = _client(socket, memory, n, requests, evaluator)
        socket.send(b"stop")
        server_cpu = float(socket.recv_string()) / (requests + WARM) * 1e6
    finally:
        server.join(timeout=10)
        if server.is_alive():
            server.kill()
        socket.close(linger=0)
        memory.close()
        memory.unlink()
        shutil.rmtree(address.removeprefix("ipc://").rsplit("/", 1)[0], ignore_errors=True)
    return {"wall_us": wall, "cpu_us": cpu + server_cpu, "server_cpu_us": server_cpu}


def hops(n: int, evaluator, requests: int = 5000) -> dict:
    """Both hops with this (picklable, not inline) evaluator: {"thread": ..., "process": ...}."""
    return {"thread": thread_hop(n, evaluator, requests), "process": process_hop(n, evaluator, requests)}
