"""The ``[probe]`` table: what a run records about its networks besides the loss.

    [probe]
    every = 500            # activation statistics at steps 0, 500, … of each epoch (0: none)
    rows = 256             # on the first 256 validation images, a fixed probe batch
    units = 4              # and the percentiles of each layer's first 4 units
    measures_every = 0     # Santurkar et al.'s ICS and landscape measures (0: none)
    step_scales = [0.5, 1, 2, 4]   # their step sizes, × the step the optimizer took
    test_each_epoch = false        # the test set after every epoch, not only the last

Every key is optional; an experiment without the table records the activation statistics
with these defaults (``train.probes.ProbePlan`` defines each quantity). A run stores the
table in ``config.json``; a stored config from before it recorded nothing.
"""

from __future__ import annotations

from typing import Any

from bnlab.config.checks import Fail, reject_unknown, shown, typed
from bnlab.errors import ConfigError
from bnlab.train.probes import ProbePlan

KEYS = {"every", "rows", "units", "measures_every", "step_scales", "test_each_epoch"}
MAX_ROWS = 5_000  # the validation set


def parse_probe(raw: Any, fail: Fail) -> ProbePlan:
    """The ``[probe]`` table as a ``ProbePlan``; a mistake fails naming ``probe.<key>``."""
    if not isinstance(raw, dict):
        raise fail("probe", "must be a table ([probe] every = 500, …)")
    reject_unknown(raw, KEYS, "probe.", fail)
    default = ProbePlan()
    values: dict[str, Any] = {}
    for key in ("every", "rows", "units", "measures_every"):
        value = typed(raw, key, int, fail, default=getattr(default, key), prefix="probe.")
        if value < 0:
            raise fail(f"probe.{key}", f"must be ≥ 0, got {value:,}")
        values[key] = value
    if not 2 <= values["rows"] <= MAX_ROWS:
        raise fail("probe.rows", f"must be in 2..{MAX_ROWS:,} (validation images; BatchNorm "
                   f"needs two rows), got {values['rows']:,}")
    test_each_epoch = raw.get("test_each_epoch", default.test_each_epoch)
    if not isinstance(test_each_epoch, bool):
        raise fail("probe.test_each_epoch", f"must be true or false, got {shown(test_each_epoch)}")
    values["test_each_epoch"] = test_each_epoch
    scales = raw.get("step_scales", list(default.step_scales))
    if not isinstance(scales, list) or not scales:
        raise fail("probe.step_scales", f"must be a non-empty array of numbers, got "
                   f"{shown(scales)}")
    typed({"step_scales": scales}, "step_scales", list, fail, prefix="probe.")  # finite
    values["step_scales"] = tuple(scales)
    try:
        return ProbePlan(**values)
    except ConfigError as err:
        raise fail("probe.step_scales" if "step_scales" in str(err) else "probe",
                   str(err)) from None


def probe_to_dict(plan: ProbePlan) -> dict[str, Any]:
    """The table as a file writes it (``config.json``)."""
    return {"every": plan.every, "rows": plan.rows, "units": plan.units,
            "measures_every": plan.measures_every, "step_scales": list(plan.step_scales),
            "test_each_epoch": plan.test_each_epoch}
