"""`python -m service --collection DIR`: serve a collection on 127.0.0.1 (as `retrieval serve`)."""

import sys

from service.cli import main

sys.exit(main())
