"""The whole suite runs with HOME in a temporary folder: the daemons it starts keep their
reference ladder games in ~/.cache/hexzd (`[ratings] ladder_file`), and one test's run
must not start from another's, nor from the user's."""

import os
import tempfile

os.environ["HOME"] = tempfile.mkdtemp(prefix="hexzd-home-")
