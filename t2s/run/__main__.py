"""`python -m t2s.run [overrides]`: the same as `t2s run`."""

import sys

from t2s.cli import main

sys.exit(main(["run", *sys.argv[1:]]))
