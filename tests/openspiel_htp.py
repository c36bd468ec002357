"""OpenSpiel's C++ MCTS as an HTP engine, for the tests: `python tests/openspiel_htp.py --sims N`.

The engine lives in the package (hexzd/benchmarks/openspiel_htp.py) so that
`hexzd bench strength` can play it; it imports nothing of hexzd's.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("hexzd.benchmarks.openspiel_htp", run_name="__main__")
