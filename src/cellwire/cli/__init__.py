"""The ``cellwire`` command: run, validate, import, export and list workflow runs.

Exit codes: 0 the run succeeded (or partially succeeded, with handled errors), 1 the run
failed, 2 the file or the command line is not valid, 3 the run ran but could not be stored,
4 the run paused for human input (answer it with ``cellwire respond``).

``app`` holds the root group and the core commands; each further area of commands lives in
a module of its own that adds itself to the group when imported here.
"""

from cellwire.cli import batch as _batch  # noqa: F401 - adds `cellwire map`
from cellwire.cli import evaluate as _evaluate  # noqa: F401 - adds `cellwire eval`
from cellwire.cli import kb as _kb  # noqa: F401 - registers `cellwire kb`
from cellwire.cli import keys as _keys  # noqa: F401 - registers `cellwire keys`
from cellwire.cli import serve as _serve  # noqa: F401 - adds `cellwire serve`
from cellwire.cli import tools as _tools  # noqa: F401 - adds `cellwire tools`
from cellwire.cli.app import cli, main

__all__ = ["cli", "main"]
