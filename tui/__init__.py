"""The Textual dashboard. Installed as `hexzd.tui`; talks to the daemon only over ZeroMQ and the state file."""
