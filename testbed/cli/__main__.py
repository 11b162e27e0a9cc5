"""``python -m testbed.cli``: the ``llamas`` command."""

import sys

from testbed.cli import main

sys.exit(main())
