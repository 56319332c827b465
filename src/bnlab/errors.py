"""The one error type users see.

A `BnlabError` is a user mistake or an environment problem (missing file, bad config,
diverging run). Its message is one line that says what is wrong and how to fix it; the
CLI prints it without a traceback and exits with status 2.
"""


class BnlabError(Exception):
    """A problem the user can fix; `str(err)` is a single human-readable line."""


class DataError(BnlabError):
    """A dataset file is missing, truncated, corrupt or has the wrong digest."""


class ConfigError(BnlabError):
    """An experiment file or command-line option is invalid."""


class DivergenceError(BnlabError):
    """Training produced a non-finite loss."""
