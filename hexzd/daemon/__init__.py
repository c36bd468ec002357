"""The daemon and its workers: processes, messages, the run directory, control.

The top of the house: only the CLI, the dashboard and the studies (`hexzd sweep`) import it.
"""
