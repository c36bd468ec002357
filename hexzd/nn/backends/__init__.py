"""The inference backends, one module each, behind one interface (base.Evaluator) and a registry.

    backend    device  precisions         how
    eager      any     fp32               the plain model: the reference (on the cpu) and the
                                          baseline that benchmarks compare with on each device
    cpu        cpu     fp32               batch norm folded into the convolutions, channels_last
    cuda       cuda    fp32 bf16 fp16     folded, channels_last, the weights cast to the precision
                                          once, one CUDA graph per batch bucket, pinned buffers and
                                          the evaluator's own stream
    mps        mps     fp32 fp16          folded, the model cast to the precision
    tensorrt   cuda    fp16 int8          torch-tensorrt engines per (snapshot, batch bucket, precision),
                                          cached on disk; int8 only where it holds TOLERANCE

Each backend module registers a base.Backend when it is imported: its name,
its priority (available() lists by it, "fastest kinds last"), `available()`
(the precisions this machine runs) and `build(model, precision, device)`.
This package imports them all, so that importing any part of it fills the
registry; a new backend is a module here and a name in the import below.

    base          the Evaluator interface, the registry, the input (codes) and the accuracy checks
    staging       batch buckets and pinned host buffers, for the bucketed device backends
    engine_cache  the TensorRT engines' disk cache

The public entry points (available, build, make_evaluator) are hexzd.nn.inference.
"""

from hexzd.nn.backends import cpu, cuda, eager, mps, tensorrt  # noqa: F401  (each registers itself)
