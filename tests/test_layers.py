"""The package's imports go one way, down the layers, and no two modules import each other.

    cli → api → report → export → experiments → store → config → analysis → train → nn → data
    → lazy, io, errors

Every ``import`` of a bnlab module is read from the source (function-level imports too), so
a new upward or circular import fails here, naming the file and the line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "bnlab"
LAYERS = ("errors limits io lazy", "data", "nn", "train", "analysis", "config", "store",
          "experiments", "export", "report", "api", "cli __main__")
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names.split()}


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    """``bnlab.store.runs`` → ``store``; the package itself (its lazy ``__init__``) is ``api``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "api"


def bnlab_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every bnlab module ``path`` imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bnlab"):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("bnlab")]
    return found


MODULES = {module_name(p): p for p in sorted(SOURCE.rglob("*.py"))}
GRAPH = {name: {imported for _, imported in bnlab_imports(path) if imported in MODULES}
         for name, path in MODULES.items()}


def test_every_module_belongs_to_a_layer():
    assert {layer(m) for m in MODULES} <= set(RANK), sorted({layer(m) for m in MODULES} - set(RANK))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module):
    upward = [f"{MODULES[module].relative_to(SOURCE.parent)}:{line} imports {imported}"
              for line, imported in bnlab_imports(MODULES[module])
              if RANK[layer(imported)] > RANK[layer(module)]]
    assert upward == []


def test_no_modules_import_each_other_even_through_others():
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in GRAPH[start]:
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(m for m in MODULES if reaches(m, m, {m}))
    assert cycles == []


def test_importing_bnlab_changes_no_global_state():
    # A fresh interpreter: after `import bnlab` (and its API module), Matplotlib's backend is
    # unchosen and JAX is untouched, so configure_jax can still set the CPU device count.
    import subprocess
    import sys

    code = """
import sys, matplotlib
before = matplotlib.rcParams._get("backend")
import bnlab, bnlab.api, bnlab.cli
import jax
assert matplotlib.rcParams._get("backend") is before, "the Matplotlib backend changed"
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
assert jax.config.jax_num_cpu_devices == -1 and not jax.config.jax_compilation_cache_dir
print(bnlab.configure_jax(cpu_devices=3), len(jax.devices("cpu")))
"""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "3"]
