"""The exit codes every command shares (README, docs/operations.md)."""

from typing import Final

EXIT_OK: Final = 0
#: A service or a check failed, or the service cannot go on.
EXIT_FAILURE: Final = 1
#: The configuration (or the command line) is unusable.
EXIT_CONFIG: Final = 2
