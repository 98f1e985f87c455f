import sys

from factorvae.cli import main

sys.exit(main())
