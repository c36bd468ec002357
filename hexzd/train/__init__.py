"""Self-play, the game sources and window, the trainer, and the tuner."""
