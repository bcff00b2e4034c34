import sys

from tvts.cli import main

sys.exit(main())
