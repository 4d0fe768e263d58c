"""``python -m ad_core.cli``."""

import sys

from ad_core.cli import main

sys.exit(main())
