"""The network, its `Snapshot`, the inference backends, the one model loader, and `export`."""
