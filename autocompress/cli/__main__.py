"""`python -m autocompress.cli`, as before the command line became a package."""

import sys

from autocompress.cli import main

sys.exit(main())
