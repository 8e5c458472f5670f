"""Importing pyroute2 without paying for all of it.

``import pyroute2`` runs a package ``__init__`` that imports every submodule (~85 ms here, more than a
whole plugin run should cost). The plugins only need a few submodules, so before the first pyroute2
import we register the package as a lazy module: submodules load on demand, and the real ``__init__``
runs only if someone asks for a package-level name (``from pyroute2 import IPRoute``), so behaviour is
unchanged for such code. ``pyroute2.lab`` (a test-mocking hook that imports unittest.mock) is replaced by
its inert equivalent.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def install() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or not spec.submodule_search_locations:
        return
    package = importlib.util.module_from_spec(spec)

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:
            return importlib.import_module(f"pyroute2.{name}")
        # A package-level re-export: run the real __init__ once, then answer from it.
        del package.__getattr__
        spec.loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = __getattr__
    sys.modules["pyroute2"] = package

    lab = types.ModuleType("pyroute2.lab")
    lab.LAB_API = type("LAB_API", (), {})
    lab.registry = []
    lab.use_mock = False
    sys.modules["pyroute2.lab"] = lab
