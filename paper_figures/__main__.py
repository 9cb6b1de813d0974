"""``python -m paper_figures --runs DIR [--out DIR]``."""

import sys

from paper_figures import cli

if __name__ == "__main__":
  sys.exit(cli.main())
