"""Importing pyroute2 without paying for all of it.

``import pyroute2`` runs a package ``__init__`` that imports every submodule (~85 ms here, more than a
whole plugin run should cost). The plugins only need a few submodules, so before the first pyroute2
import we register the package as a lazy module: submodules load on demand, and the real ``__init__``
runs only if someone asks for a package-level name (``from pyroute2 import IPRoute``), so behaviour is
unchanged for such code. ``pyroute2.lab`` (a test-mocking hook that imports unittest.mock) is replaced by
its inert equivalent. ``pyroute2.iproute`` gets the same lazy treatment: its ``__init__`` only re-exports
``pyroute2.iproute.linux``, which is what the plugins import. ``pyroute2.config`` asks
``platform.architecture()`` and ``platform.uname()`` at import, which run ``file`` on the interpreter and
``uname -p`` (a fork and exec each, ~15 ms together); it is given what those calls give without them (see
_QuickArchLoader).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types


def install() -> None:
    if "pyroute2" in sys.modules:
        return
    package = _lazy_package("pyroute2")
    if package is None:
        return

    lab = types.ModuleType("pyroute2.lab")
    lab.LAB_API = type("LAB_API", (), {})
    lab.registry = []
    lab.use_mock = False
    sys.modules["pyroute2.lab"] = lab
    if _lazy_package("pyroute2.iproute", search=package.__path__) is not None:
        package.iproute = sys.modules["pyroute2.iproute"]
    if _QuickArchFinder not in sys.meta_path:
        sys.meta_path.insert(0, _QuickArchFinder)


def _lazy_package(name: str, search=None):
    """Registers package ``name`` with its ``__init__`` deferred until a package-level name is asked for."""
    spec = importlib.machinery.PathFinder.find_spec(name, search) if search is not None \
        else importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    package = importlib.util.module_from_spec(spec)

    def __getattr__(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if importlib.util.find_spec(f"{name}.{attr}") is not None:
            return importlib.import_module(f"{name}.{attr}")
        # A package-level re-export: run the real __init__ once, then answer from it.
        del package.__getattr__
        spec.loader.exec_module(package)
        return getattr(package, attr)

    package.__getattr__ = __getattr__
    sys.modules[name] = package
    return package


def _pointer_size_architecture(executable=sys.executable, bits="", linkage=""):
    import struct
    return bits or f"{struct.calcsize('P') * 8}bit", linkage


def _uname_without_processor():
    import collections
    import os

    result = collections.namedtuple("uname_result", "system node release version machine processor")
    return result(*os.uname(), "")


class _QuickArchLoader:
    """Runs pyroute2.config with platform.architecture answering from the pointer size and platform.uname
    from os.uname (its ``processor`` field, which pyroute2 never reads, runs ``uname -p``: another fork and
    exec). The platform module is restored as soon as pyroute2.config has run."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        import platform

        real = platform.architecture, platform.uname
        platform.architecture, platform.uname = _pointer_size_architecture, _uname_without_processor
        try:
            self.loader.exec_module(module)
        finally:
            platform.architecture, platform.uname = real


class _QuickArchFinder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "pyroute2.config":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuickArchLoader(spec.loader)
        return spec
