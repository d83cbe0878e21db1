"""``python -m console`` = ``dbp console``."""
import sys

from .app import main

sys.exit(main(argv=sys.argv[1:]))
