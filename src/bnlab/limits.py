"""The sizes bnlab accepts from outside, each checked before anything is allocated.

A file, an image or an experiment may come from someone else (a download, a colleague's run
folder, a cluster's shared disk), so bnlab trusts no size it reads: a declared size (a file's
bytes, an image's pixels, a tensor's elements in a file header, a zip member's uncompressed
bytes, a model's parameters) is compared with its limit first, and over the limit is one line
that names the limit and how to raise it. Each limit is raised for one process by the
environment variable ``BNLAB_MAX_<NAME>`` (a whole number; ``k``, ``M`` and ``G`` suffixes as
powers of 1000 — ``BNLAB_MAX_MODEL_BYTES=4G``).

- ``MODEL_BYTES`` (1 G): an ONNX, ``.keras`` or checkpoint file, and a ``.keras`` file's
  unzipped members;
- ``IMAGE_BYTES`` (256 M): an image file given to ``predict``;
- ``IMAGE_PIXELS`` (40 M): an image's pixels, decoded (a 40-megapixel photo);
- ``RUN_FILE_BYTES`` (256 M): a run folder's JSON, CSV, figure or TensorBoard file, and an
  experiment file;
- ``DATA_BYTES`` (256 M): a dataset file (gzip);
- ``PARAMETERS`` (1 G): a model's parameters (4 bytes each);
- ``BATCH_VALUES`` (256 M, a gigabyte of float32): a batch's rows × its widest layer (the
  activations held at once);
- ``INFERENCE_SECONDS`` (600): onnxruntime running one batch of a model file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from bnlab.errors import BnlabError

_SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_NUMBER = re.compile(r"\s*(\d+)\s*([kMGT]?)\s*")


class LimitExceeded(BnlabError):
    """A declared size over one of bnlab's limits (``Limit.check``); ``reason`` is the
    message without its subject (``"is 3,000 bytes, over …"``)."""

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class Limit:
    """A bound on a size read from outside: ``name`` (``BNLAB_MAX_<name>`` raises it),
    its ``default``, the ``unit`` counted and ``what`` it bounds."""

    name: str
    default: int
    unit: str
    what: str

    @property
    def variable(self) -> str:
        return f"BNLAB_MAX_{self.name}"

    @property
    def value(self) -> int:
        """The limit in force: ``BNLAB_MAX_<name>`` when set (a ``LimitExceeded`` if it is
        not a whole number), else the default."""
        text = os.environ.get(self.variable)
        if text is None or not text.strip():
            return self.default
        match = _NUMBER.fullmatch(text)
        if not match:
            raise LimitExceeded(f"{self.variable}={text!r} is not a whole number (e.g. 4G); "
                                "set it to a count, or unset it for the default")
        return int(match[1]) * _SUFFIXES[match[2]]

    def check(self, amount: int, subject: str) -> None:
        """A ``LimitExceeded`` naming ``subject`` when ``amount`` is over the limit."""
        limit = self.value
        if amount > limit:
            reason = (f"is {amount:,} {self.unit}, over bnlab's limit of {limit:,} for "
                      f"{self.what}; if you trust it, raise the limit with {self.variable}="
                      f"{_round_up(amount)}")
            raise LimitExceeded(f"{subject} {reason}", reason=reason)


def _round_up(amount: int) -> str:
    """A value for the variable at least ``amount``: ``3.2e9`` → ``4G``."""
    for suffix in ("T", "G", "M", "k"):
        scale = _SUFFIXES[suffix]
        if amount >= scale:
            return f"{-(-amount // scale)}{suffix}"
    return str(amount)


MODEL_BYTES = Limit("MODEL_BYTES", 10**9, "bytes", "a model file")
IMAGE_BYTES = Limit("IMAGE_BYTES", 256 * 10**6, "bytes", "an image file")
IMAGE_PIXELS = Limit("IMAGE_PIXELS", 40 * 10**6, "pixels", "an image")
RUN_FILE_BYTES = Limit("RUN_FILE_BYTES", 256 * 10**6, "bytes", "a run's or experiment's file")
DATA_BYTES = Limit("DATA_BYTES", 256 * 10**6, "bytes", "a dataset file")
PARAMETERS = Limit("PARAMETERS", 10**9, "parameters", "a model")
BATCH_VALUES = Limit("BATCH_VALUES", 256 * 10**6, "values",
                     "a batch's activations (rows × widest layer)")
INFERENCE_SECONDS = Limit("INFERENCE_SECONDS", 600, "seconds",
                          "onnxruntime running one batch")
