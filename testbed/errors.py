"""Errors a user can fix, each naming what is wrong and where."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Something the user can fix; the CLI prints it on one line and exits 2."""

    exit_code = 2


class ConfigError(UserError):
    """A configuration file that says something wrong."""

    def __init__(self, path: Path | str, field: str, problem: str) -> None:
        self.path = str(path)
        self.field = field
        self.problem = problem
        where = f"{self.path}: {field}" if field else self.path
        super().__init__(f"{where}: {problem}")


class ResultsUnwritable(UserError):
    """The run directory takes no more (a full disk, a read-only mount): the experiment stops there, and
    what was written before stays as it was."""

    def __init__(self, path: Path | str, error: OSError) -> None:
        super().__init__(f"cannot write {path}: {error.strerror or error}; the experiment stops here, and the "
                         "records written before it are kept")
