"""``python -m dbp_core`` = the ``dbp`` command."""
import sys

from .cli import main

sys.exit(main())
