"""The network, its `Snapshot`, the inference backends and the one model loader."""
