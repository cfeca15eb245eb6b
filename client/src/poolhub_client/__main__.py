import sys

from poolhub_client.cli import main

sys.exit(main())
