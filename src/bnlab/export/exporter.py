"""One trained member (``export.trained``) written out, as ``bnlab export`` and
``bnlab.export_model`` do it: its BatchNorm layers folded if asked (``nn.fold``), then

- ``"onnx"``: the graph (``export.onnx``) checked by ``onnx.checker`` and run by onnxruntime
  against bnlab's own inference on the given images; it is written only when the largest
  probability difference is within ``TOLERANCE``, else a ``VerificationError``;
- ``"keras"``: a Keras 3 ``.keras`` file (``export.keras_format``);
- ``"torch"``: a PyTorch ``state_dict`` as safetensors and the code that loads it
  (``export.torch_format``).

Every convention converted on the way is returned as a sentence (``Exported.conversions``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.errors import BnlabError, ConfigError
from bnlab.export.trained import TrainedMember
from bnlab.io import atomic_write_bytes
from bnlab.nn.fold import FoldedModel, fold_batchnorm
from bnlab.nn.summary import summarize

FORMATS = {"onnx": ".onnx", "keras": ".keras", "torch": ".safetensors"}
TOLERANCE = 1e-5  # largest |Δ probability| accepted between onnxruntime and bnlab


@dataclass(frozen=True)
class Exported:
    """What ``export_member`` wrote: the ``member``, the ``paths`` written, its parameter
    count and the exported model's (``parameters``, ``exported_parameters``), the fold
    (``folded``, or ``None``), onnxruntime's agreement with bnlab (``verification``, ONNX
    only: an ``export.onnx.Verification``) and the conventions converted."""

    member: TrainedMember
    format: str
    paths: tuple[Path, ...]
    parameters: int
    exported_parameters: int
    folded: FoldedModel | None
    verification: Any
    conversions: tuple[str, ...]


class VerificationError(BnlabError):
    """onnxruntime's outputs differ from bnlab's by more than ``TOLERANCE``: nothing was
    written; ``exported`` holds what was measured (its ``paths`` are empty)."""

    def __init__(self, message: str, exported: Exported) -> None:
        super().__init__(message)
        self.exported = exported


def onnx_module():
    """``bnlab.export.onnx``, or a ``ConfigError`` saying how to install the ``onnx`` extra
    (onnx and onnxruntime) when either is missing."""
    try:
        import onnx as _onnx  # noqa: F401 — the extra's two packages, each checked
        import onnxruntime  # noqa: F401 — verify and load_classifier run it

        from bnlab.export import onnx
    except ImportError as err:
        raise ConfigError(f"ONNX needs the onnx extra ({err.name} is missing): pip install "
                          "'bnlab[onnx]'") from None
    return onnx


def checked_format(format: str) -> str:
    """``format`` if it is one of ``FORMATS``, else a ``ConfigError`` naming them."""
    if format not in FORMATS:
        raise ConfigError(f"export format {format!r}: choose one of {', '.join(FORMATS)}")
    return format


def default_path(member: TrainedMember, folder: Path, format: str, fold: bool) -> Path:
    """``<folder>/<variant>-seed<seed>[-folded]<suffix of format>``."""
    checked_format(format)
    return folder / f"{member.variant}-seed{member.seed}{'-folded' * fold}{FORMATS[format]}"


def export_member(member: TrainedMember, out: Path, *, format: str = "onnx",
                  fold: bool = False, class_names: Sequence[str] = (),
                  images: np.ndarray | None = None) -> Exported:
    """Write ``member`` to ``out`` as ``format`` (module docstring), folded first if ``fold``.
    ONNX needs ``images`` (model inputs, float32: e.g. the test set / 255) to verify on, and
    stores ``class_names`` in its metadata. An unknown format, a layer the format has no
    counterpart for, or a missing ``onnx`` extra is a ``BnlabError`` before anything is
    written."""
    out = Path(out)
    if out.suffix.lower() != FORMATS[checked_format(format)]:
        raise ConfigError(f"{out}: {format} exports are {FORMATS[format]} files; name it so")
    model, params, state = member.model, member.params, member.bn_state
    folded = None
    if fold:
        folded = fold_batchnorm(model, params, state)
        model, params, state = folded.model, folded.params, folded.bn_state
    common = dict(member=member, format=format, parameters=summarize(member.model).total,
                  exported_parameters=summarize(model).total, folded=folded)
    if format == "keras":
        from bnlab.export.keras_format import write_keras

        written = write_keras(out, model, params, state)
        return Exported(paths=(out,), verification=None, conversions=written.conversions,
                        **common)
    if format == "torch":
        from bnlab.export.torch_format import write_torch

        written = write_torch(out, model, params, state)
        return Exported(paths=(out, out.with_suffix(".py")), verification=None,
                        conversions=written.conversions, **common)
    onnx = onnx_module()
    if images is None:
        raise ConfigError("an ONNX export is verified against bnlab on images: give images")
    proto = onnx.to_onnx(model, params, state, name=f"{member.variant}-seed{member.seed}",
                         class_names=class_names)
    check = onnx.verify(proto, model, params, state, images)
    if check.max_probability_error > TOLERANCE:
        raise VerificationError(
            f"onnxruntime differs from bnlab by {check.max_probability_error:.1e} > "
            f"{TOLERANCE:g} in probability; nothing written",
            Exported(paths=(), verification=check, conversions=(), **common))
    atomic_write_bytes(out, proto.SerializeToString())
    return Exported(paths=(out,), verification=check, conversions=(), **common)
