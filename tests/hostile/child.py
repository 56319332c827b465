"""Runs the hostile cases (``tests/hostile/cases.py``) in this process, one after another,
under the address-space limit its argument gives (bytes; ``RLIMIT_AS``), and prints a JSON
line per case: what it said, how long it took and how far it raised the process's peak
memory. ``test_hostile_inputs.py`` starts it with a deadline, so a case that exhausts memory
or hangs shows as that case's failure (the line ``{"start": name}`` comes before each
case)."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from tests.hostile.cases import CASES


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def run_case(case, folder: Path) -> dict:
    action = case.build(folder)
    kept = {name: digest(folder / name) for name in case.untouched}
    saved = {key: os.environ.get(key) for key in case.environment}
    os.environ.update(case.environment)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        result = action()
        outcome, message = "accepted", str(result)[:2000]
    except Exception as err:
        from bnlab.errors import BnlabError

        outcome = "refused" if isinstance(err, BnlabError) else "crashed"
        message = (f"{err}" if isinstance(err, BnlabError)
                   else f"{type(err).__name__}: {err}")[:2000]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    seconds = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    changed = [name for name, before in kept.items() if digest(folder / name) != before]
    return {"name": case.name, "outcome": outcome, "message": message,
            "seconds": round(seconds, 3), "peak_growth_mb": round(grown / 1024, 1),
            "changed": changed}


def main() -> None:
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else resource.RLIM_INFINITY
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import h5py  # noqa: F401
    import onnxruntime  # noqa: F401

    import bnlab.api  # noqa: F401 — imports counted before the first case, not in it

    for case in CASES:
        print(json.dumps({"start": case.name}), flush=True)
        with tempfile.TemporaryDirectory(prefix="hostile-") as folder:
            print(json.dumps(run_case(case, Path(folder))), flush=True)


if __name__ == "__main__":
    sys.exit(main())
