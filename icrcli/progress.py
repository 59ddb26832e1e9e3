"""What long work tells the user, as one object: loading steps, progress, resumption, waiting on other
workers, warnings and interruption. This base class says nothing (for library use and tests);
icrcli.cli.console implements it on stderr."""

from __future__ import annotations


class Reporter:
    def step(self, what: str) -> None:
        """A loading step is starting, e.g. "loading checkpoint ck.pt", "hashing imgs/"."""

    def start(self, what: str, total: int, done: int = 0, unit: str | None = None) -> None:
        """Work on `total` items (images unless `unit` says what) begins, `done` of them already finished (a
        resumed run). A start ends the work started before it."""

    def advance(self, n: int) -> None:
        """n more items finished (called once per batch)."""

    def finish(self) -> None:
        """The work started by start() has ended (successfully or not)."""

    def resumed(self, done: int, total: int) -> None:
        """A previous run left `done` of `total` items finished; they are not recomputed."""

    def waiting(self, why: str) -> None:
        """Nothing to do until another process finishes something (said once per wait)."""

    def note(self, msg: str) -> None:
        """A result as it comes, one line (e.g. each timeline point with its ICR), or why a watch ended."""

    def warn(self, msg: str) -> None:
        """Something the user should know that does not stop the work."""

    def interrupted(self, msg: str) -> None:
        """The work was interrupted (Ctrl-C); msg says what was kept and how to resume."""


SILENT = Reporter()
