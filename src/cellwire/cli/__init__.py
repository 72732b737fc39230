"""The ``cellwire`` command: run, validate, import, export and list workflow runs.

Exit codes: 0 the run succeeded (or partially succeeded, with handled errors), 1 the run
failed, 2 the file or the command line is not valid, 3 the run ran but could not be stored.

``app`` holds the root group and the core commands; each further area of commands lives in
a module of its own that adds itself to the group when imported here.
"""

from cellwire.cli import kb as _kb  # noqa: F401 - registers `cellwire kb`
from cellwire.cli.app import cli, main

__all__ = ["cli", "main"]
