import sys

from meta_core.cli import main

sys.exit(main())
