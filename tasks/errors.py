"""The error hierarchy. A MoeflowError is a user-facing problem: the CLI prints its
message on one line and exits non-zero, without a traceback."""

from __future__ import annotations

import functools
import sys
from typing import Callable


class MoeflowError(Exception):
    """Base class for errors a user can act on."""

    exit_code = 1


class ConfigError(MoeflowError, ValueError):
    """A configuration is wrong: unknown key, wrong type, bad value, in params.yaml, a run.json or
    a generator's recorded config. The one error the config builder (tasks.typed) and every
    `validate` method raise; its message is one line naming the dotted key."""

    exit_code = 2


class SourceError(MoeflowError):
    """A data source cannot be used: unreachable host, nothing matches, too many failures."""


class DataError(MoeflowError):
    """An artifact on disk is missing or malformed (run the upstream stage first)."""


class ReviewError(MoeflowError):
    """The reviewer's CSV cannot be accepted (bad column, value, conflict)."""


class Rejected(Exception):
    """One item (a URL, a download, an input image) is set aside: not a user's mistake but a
    verdict that a stage records. `reason` is a stable code (records, counts), `detail` says why
    for a person. Whether a later run tries the item again is the stage's rule, by reason
    (scrape: tasks.scrape.validate.CUT_SHORT on an unframed body; detect:
    tasks.detect.work.TRANSIENT_REASONS). A transient network failure is tasks.http.FetchFailed."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason, detail)  # both in args: it pickles across processes
        self.reason, self.detail = reason, detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


class OptoutError(MoeflowError):
    """optout.csv cannot be accepted: one line per problem, each naming the file, line and value."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP reached a stage (`kill PID`, a supervisor, a closed terminal): the same clean
    stop as Ctrl-C (pools shut down, state checkpointed, locks released), exit 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def one_line_errors(interrupted: str | None = None) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """A command's main(): a MoeflowError becomes its `error:` line on stderr (one per problem when
    it names several) and its exit code, never a traceback; with `interrupted`, Ctrl-C prints that
    line and exits 130 (a Terminated signal: 128 + its number)."""
    caught = (MoeflowError, KeyboardInterrupt) if interrupted else (MoeflowError,)

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except caught as e:
                if isinstance(e, KeyboardInterrupt):
                    print(interrupted, file=sys.stderr)
                    return 128 + e.signum if isinstance(e, Terminated) else 130
                for line in str(e).splitlines() or [type(e).__name__]:  # several problems: one line each
                    print(f"error: {line}", file=sys.stderr)
                return e.exit_code

        return run

    return wrap
