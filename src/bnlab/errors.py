"""The one error type users see.

A `BnlabError` is a user mistake or an environment problem (missing file, bad config,
diverging run). Its message is one line that says what is wrong and how to fix it; the
CLI prints it without a traceback and exits with status 2.
"""


class BnlabError(Exception):
    """A problem the user can fix; `str(err)` is a single human-readable line."""


class DataError(BnlabError):
    """A dataset file is missing, truncated, corrupt or has the wrong digest."""


class GzipError(DataError):
    """A gzip file that cannot be decompressed; `problem` is "empty", "truncated", "corrupt"
    or "too large"."""

    def __init__(self, message: str, *, problem: str):
        super().__init__(message)
        self.problem = problem


class ConfigError(BnlabError):
    """An experiment file or command-line option is invalid."""


class LayerInputError(ConfigError):
    """A model's layer cannot take what the layer before it gives; `index` is its 0-based
    position in the model."""

    def __init__(self, message: str, *, index: int):
        super().__init__(message)
        self.index = index


class DivergenceError(BnlabError):
    """Training produced a non-finite loss."""
