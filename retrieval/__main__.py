"""`python -m retrieval`: the same as the `retrieval` command."""

import sys

from retrieval.cli.main import main

sys.exit(main())
