"""The ``[augment]`` table: what each training image goes through (``train.augment``).

    [augment]
    crop_padding = 2       # pad 2 zero pixels on every side, then crop back at random (0: no)
    flip = true            # mirror left and right with probability 1/2

Both keys are optional and off by default; an experiment without the table trains on the
images as they are, and its ``config.json`` has no ``augment`` key (so a run from before
augmentation existed reads back the same).
"""

from __future__ import annotations

from typing import Any

from bnlab.config.checks import Fail, reject_unknown, shown, typed
from bnlab.train.augment import Augmentation

KEYS = {"crop_padding", "flip"}


def parse_augment(raw: Any, fail: Fail) -> Augmentation:
    """The ``[augment]`` table as an ``Augmentation``; a mistake fails naming
    ``augment.<key>``."""
    if not isinstance(raw, dict):
        raise fail("augment", "must be a table ([augment] crop_padding = 2, flip = true)")
    reject_unknown(raw, KEYS, "augment.", fail)
    padding = typed(raw, "crop_padding", int, fail, default=0, prefix="augment.")
    if padding < 0:
        raise fail("augment.crop_padding", f"must be ≥ 0 pixels, got {padding:,}")
    flip = raw.get("flip", False)
    if not isinstance(flip, bool):
        raise fail("augment.flip", f"must be true or false, got {shown(flip)}")
    return Augmentation(crop_padding=padding, flip=flip)


def augment_to_dict(augmentation: Augmentation) -> dict[str, Any]:
    """The table as a file writes it (``config.json``)."""
    return {"crop_padding": augmentation.crop_padding, "flip": augmentation.flip}
