"""The error hierarchy. A MoeflowError is a user-facing problem: the CLI prints its
message on one line and exits non-zero, without a traceback."""

from __future__ import annotations


class MoeflowError(Exception):
    """Base class for errors a user can act on."""

    exit_code = 1


class ConfigError(MoeflowError):
    """params.yaml (or a file it names) is wrong: unknown key, wrong type, bad value."""

    exit_code = 2


class SourceError(MoeflowError):
    """A data source cannot be used: unreachable host, nothing matches, too many failures."""


class DataError(MoeflowError):
    """An artifact on disk is missing or malformed (run the upstream stage first)."""


class ReviewError(MoeflowError):
    """The reviewer's CSV cannot be accepted (bad column, value, conflict)."""


class OptoutError(MoeflowError):
    """optout.csv cannot be accepted: one line per problem, each naming the file, line and value."""
