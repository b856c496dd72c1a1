"""``python -m qbit_consumer`` is the same as the ``qbit-consumer`` console script."""

import sys

from qbit_consumer.cli.main import main

sys.exit(main())
