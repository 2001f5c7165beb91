"""`python -m xray`: the `xray` command line."""

import sys

from xray.cli import main

sys.exit(main())
