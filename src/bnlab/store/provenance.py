"""Where, with what and on which data a run ran: ``environment.json``, and every resume.

    {"python": "3.11.7", "platform": "Linux-…", "packages": {"jax": "0.10.2", …},
     "device": "cpu:cpu", "device_count": 2, "seeds": [42, 43],
     "data": {"train": 55000, "val": 5000, "test": 10000, "sha256": "…"},
     "command": ["bnlab", "run", "seed"],                     (when started by the command)
     "resumes": [{"at": "2026-12-02T10:00:00+00:00", "python": …, "device": …}, …]}

``data`` identifies the arrays a run trained and was evaluated on (a subset of the dataset is
other data), so that a resume continues a run only on the data it started with.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.data.datasets import DATASETS, Splits
from bnlab.errors import BnlabError
from bnlab.io import atomic_write_json, read_json
from bnlab.lazy import Deferred

jax = Deferred("jax")  # its devices, when a run starts

PACKAGES = ("bnlab", "jax", "jaxlib", "optax", "numpy")


def device_name() -> str:
    """JAX's first device as ``platform:kind``, e.g. ``cpu:cpu`` or ``gpu:NVIDIA H200``."""
    device = jax.devices()[0]
    return f"{device.platform}:{device.device_kind}"


def devices_label() -> str:
    """The devices a run's seeds spread over, e.g. ``gpu:NVIDIA H200`` or ``2 × cpu:cpu``."""
    count = jax.device_count()
    return device_name() if count == 1 else f"{count} × {device_name()}"


def environment(seeds: Sequence[int]) -> dict[str, object]:
    """This process's environment: versions, device, and the run's ``seeds``."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "device": device_name(),
        "device_count": jax.device_count(),
        "seeds": list(seeds),
    }


def data_fingerprint(splits: Splits) -> dict[str, int | str]:
    """The rows of each split and a SHA-256 over every array (dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for array in (splits.x_train, splits.y_train, splits.x_val, splits.y_val, splits.x_test,
                  splits.y_test):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return {"train": len(splits.y_train), "val": len(splits.y_val),
            "test": len(splits.y_test), "sha256": digest.hexdigest()}


def same_data(environment: Mapping[str, Any], fingerprint: Mapping[str, Any],
              dataset: str) -> bool:
    """Whether a run whose ``environment.json`` is ``environment`` trained on the data of
    ``fingerprint``. Runs from before the data was recorded trained on the whole dataset."""
    stored = environment.get("data")
    if stored is None:
        spec = DATASETS[dataset]
        whole = (spec.train_images.shape[0] - spec.validation_size, spec.validation_size,
                 spec.test_images.shape[0])
        return tuple(fingerprint[k] for k in ("train", "val", "test")) == whole
    return stored == dict(fingerprint)


def write_environment(run_dir: Path, seeds: Sequence[int], splits: Splits, *,
                      command: Sequence[str] | None = None,
                      note: str | None = None) -> dict[str, Any]:
    """Write and return ``environment.json`` of a new run that trains ``seeds`` on
    ``splits``; ``command``: the shell command that started it (what ``bnlab show`` adds
    ``--resume`` to), ``note``: a sentence kept in it."""
    document = {**environment(seeds), "data": data_fingerprint(splits),
                **({"command": list(command)} if command else {}),
                **({"note": note} if note else {})}
    atomic_write_json(run_dir / "environment.json", document)
    return document


def record_resume(run_dir: Path, seeds: Sequence[int]) -> list[str]:
    """Append this process's environment to ``environment.json``'s ``resumes`` list (with the
    time) and return how it differs from the environment the run started in, one phrase per
    difference (``"jax 0.11.2 (started with 0.10.2)"``): a resumed run mixes both."""
    path = run_dir / "environment.json"
    fix = "the run is damaged; resume it again to repair it"
    started = read_json(path, fix=fix)
    if not isinstance(started, dict):
        raise BnlabError(f"{path} is not a JSON object; {fix}")
    now = environment(seeds)
    changes = [f"{key} {now[key]} (started with {started.get(key, 'unknown')})"
               for key in ("python", "device", "device_count") if started.get(key) != now[key]]
    old_packages = started.get("packages") or {}
    changes += [f"{name} {version or 'not installed'} (started with "
                f"{old_packages.get(name) or 'not installed'})"
                for name, version in now["packages"].items()
                if old_packages.get(name) != version]
    entry = {"at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
             **{k: v for k, v in now.items() if k != "seeds"}}
    atomic_write_json(path, {**started, "resumes": [*started.get("resumes", []), entry]})
    return changes
