"""Setting bnlab up in a process: JAX's devices and compilation cache, and the data."""

from __future__ import annotations

import os
from pathlib import Path

from bnlab.data.datasets import Splits, get_spec, load_dataset
from bnlab.data.sources import check_files
from bnlab.experiments.observer import SILENT, Observer
from bnlab.io import cache_folder
from bnlab.report.progress import ProgressObserver


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def configure_jax(*, cpu_devices: int | None = 0, compilation_cache: bool = True,
                  cache_dir: Path | str | None = None) -> bool:
    """Set JAX up as the ``bnlab`` command does; **changes JAX's global configuration**, so
    call it right after ``import bnlab``, before anything computes with JAX.

    - ``cpu_devices``: the CPU backend gets this many devices (``0``: one per core this
      process may use, ``available_cpus()``; ``None``: leave JAX's choice), so that the seeds
      of a run train side by side on every core. Skipped when the environment already chose
      (``JAX_NUM_CPU_DEVICES``, or XLA_FLAGS' ``--xla_force_host_platform_device_count``) or
      when JAX has started; the return value says whether the count was set. The count
      decides how seeds are grouped, so float rounding, not results, may differ between
      machines with different core counts.
    - ``compilation_cache``: JAX's persistent compilation cache goes to
      ``cache_folder(cache_dir) / "jax"``, so a rerun skips most compilation; left alone when
      one is already chosen (``JAX_COMPILATION_CACHE_DIR``, or an earlier call).
    """
    import jax

    set_devices = False
    chosen = ("xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
              or jax.config.jax_num_cpu_devices != -1)
    if cpu_devices is not None and not chosen:
        try:
            jax.config.update("jax_num_cpu_devices", cpu_devices or available_cpus())
            set_devices = True
        except RuntimeError:  # JAX's backends are already initialized
            pass
    if compilation_cache and not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(cache_folder(cache_dir) / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return set_devices


def load_fashion_mnist(*, data_dir: Path | str | None = None,
                       cache_dir: Path | str | None = None, download: bool = True,
                       progress: bool = True) -> Splits:
    """The real Fashion-MNIST in the notebook's split (``Splits``: ``x_train (55000, 28, 28)
    uint8``, ``x_val`` the first 5,000 training images, ``x_test``, int32 labels).

    The files come from ``data_dir`` only when given; else from the cache, Debian's
    ``dataset-fashion-mnist``, or a download (when ``download``) from the canonical mirrors,
    every file's digest verified. A missing or damaged file is a ``DataError`` naming it and
    the fix. ``progress`` shows a bar while downloading.
    """
    with ProgressObserver(verbose=1 if progress else 0) as observer:
        return load_data("fashion_mnist", data_dir=data_dir, cache_dir=cache_dir,
                         download=download, observer=observer)


def load_data(dataset: str, *, data_dir: Path | str | None, cache_dir: Path | str | None,
              download: bool, observer: Observer = SILENT) -> Splits:
    """Dataset ``dataset`` from bnlab's cache folder (``io.cache_folder``), as every workflow
    loads it: ``observer`` hears each download and, as a warning, what the search has to
    say (a corrupt cached copy skipped for a verified one)."""
    splits = load_dataset(dataset, data_dir=None if data_dir is None else Path(data_dir),
                          cache_dir=cache_folder(cache_dir) / "datasets", download=download,
                          on_progress=observer.download)
    for source in splits.sources:
        for note in source.notes:
            observer.warning(note)
    return splits


def check_data(*, data_dir: Path | str | None = None, cache_dir: Path | str | None = None,
               download: bool = True, observer: Observer = SILENT) -> dict:
    """Where each Fashion-MNIST file is found and whether it verifies, as ``bnlab data``
    shows it: ``{role: data.sources result or the BnlabError saying why it is unusable}``."""
    return check_files(get_spec("fashion_mnist"),
                       data_dir=None if data_dir is None else Path(data_dir),
                       cache_dir=cache_folder(cache_dir) / "datasets", download=download,
                       on_progress=observer.download)
