import sys

from automtl_cli.cli.main import main

sys.exit(main())
