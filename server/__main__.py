"""`python -m stockgate.server [flags]`: the same as `stockgate serve [flags]`."""

import sys

from .app import main

sys.exit(main())
