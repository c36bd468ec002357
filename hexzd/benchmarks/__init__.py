"""`hexzd bench ...`: each module times hexzd and a baseline in the same run.

Every benchmark module has `run(**options) -> dict`, whose result carries at
least `unit`, `hexzd_per_s`, `baseline_per_s` and `ratio`, and `report(result)`
that prints it for a person.
"""
