"""Importing pyroute2 without paying for all of it.

``import pyroute2`` runs a package ``__init__`` that imports every submodule (~85 ms here, more than a
whole plugin run should cost). The plugins only need a few submodules, so before the first pyroute2
import we register the package as a lazy module: submodules load on demand, and the real ``__init__``
runs only if someone asks for a package-level name (``from pyroute2 import IPRoute``), so behaviour is
unchanged for such code. ``pyroute2.lab`` (a test-mocking hook that imports unittest.mock) is replaced by
its inert equivalent. ``pyroute2.iproute`` gets the same lazy treatment: its ``__init__`` only re-exports
``pyroute2.iproute.linux``, which is what the plugins import. ``pyroute2.config`` asks
``platform.architecture()`` and ``platform.uname()`` at import, which run ``file`` on the interpreter and
``uname -p`` (a fork and exec each, ~15 ms together); it is given what those calls give without them, and
call-through stand-ins for the ``multiprocessing`` it imports for its remote and IPDB helpers (see
_QuickArchLoader). ``pyroute2.netlink.rtnl.tcmsg`` (every qdisc and classifier module,
~7 ms) is imported by the netlink marshal and IPRoute of every plugin, though only the bandwidth plugin
sends traffic-control messages: it loads when a tc message is built or parsed (see _DeferredTcLoader).
Likewise the fifteen link-kind modules ifinfmsg imports (bond, vlan, vxlan...): each one's code runs when
its kind is first looked up (see _DeferredKindLoader).

``defer_stdlib`` is for one-request processes (cni_plugins/main.py): standard modules imported at module
level but used only inside functions (``inspect``, through ``dataclasses``, and some that logging and
pyroute2 import) run their code on first attribute access instead of at start.

``cache_compiled_code`` is for them too: ``@dataclass`` writes each class's ``__init__``, ``__repr__``,
``__eq__``... as source text and compiles it, every process anew (~1 ms a class here, ~20 classes a
plugin); the code objects are kept, by that exact text, in a marshal file beside the package's bytecode
and reused (the same code ``exec`` would compile from the text); each plugin's first run writes its file.
Regular expressions that modules compile at import (json's six, dataclasses', pyroute2's, ours) go into
the same file: ``re`` parses and compiles a pattern in Python (0.3-1 ms each here); what it hands the C
engine (``_sre.compile``'s arguments: plain ints, strings and dicts) is kept by pattern and flags.
"""

from __future__ import annotations

import marshal
import os
import sys
import types
from collections.abc import Mapping

# The import system's own finder and module factory (what importlib.machinery.PathFinder and
# importlib.util.module_from_spec are), already loaded with the interpreter: the ``importlib`` package
# (with ``warnings`` and ``contextlib``) would cost a plugin process more than the rest of this module.
_PathFinder = sys.modules["_frozen_importlib_external"].PathFinder
_module_from_spec = sys.modules["_frozen_importlib"].module_from_spec


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
    if _LeanFinder not in sys.meta_path:
        sys.meta_path.insert(0, _LeanFinder)


# Imported at module level by dataclasses (inspect, copy), logging and pyroute2 (traceback, with linecache,
# tokenize and textwrap under it; pkgutil, subprocess, random), but only called inside functions that a
# plugin run mostly never reaches (error paths, pyroute2 features the plugins do not use). pyroute2's
# modules also call ``logging.getLogger`` at import (logging: ~6 ms here) and log only on rare paths:
# until logging has run, that call gives a stand-in that becomes the real logger on first use.
DEFERRED_STDLIB = ("inspect", "traceback", "pkgutil", "subprocess", "random", "copy", "logging")


def defer_stdlib(names=DEFERRED_STDLIB) -> None:
    """Makes the standard modules ``names`` run their code on first attribute access rather than on import.

    Not importlib.util.LazyLoader: in 3.11 every later ``import`` statement of the module reads its
    ``__spec__``, which makes a LazyLoader module load at once. Only for single-threaded, one-request
    processes: the first access is not guarded against two threads at once (the daemon never calls this)."""
    for name in names:
        if name in sys.modules:
            continue
        spec = _PathFinder.find_spec(name)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            continue
        module = _module_from_spec(spec)

        def __getattr__(attr: str, module=module, spec=spec):
            if attr == "__path__":   # importlib asking whether it is a package: it is not
                raise AttributeError(attr)
            del module.__getattr__
            spec.loader.exec_module(module)
            return getattr(module, attr)

        module.__getattr__ = __getattr__
        if name == "logging":
            module.getLogger = _deferred_get_logger(module)
        sys.modules[name] = module


def _deferred_get_logger(logging):
    def getLogger(name=None):
        return _DeferredLogger(logging, name)

    return getLogger


class _DeferredLogger:
    """What ``logging.getLogger(name)`` gives before logging has run: every attribute is the real logger's
    (running logging's code first)."""

    def __init__(self, logging, name):
        self._logging = logging
        self._name = name
        self._logger = None

    def __getattr__(self, attr):
        if self._logger is None:
            deferred = vars(self._logging).get("__getattr__")
            if deferred is not None:
                deferred("getLogger")   # runs logging's own code, which replaces getLogger
            self._logger = self._logging.getLogger(self._name)
        return getattr(self._logger, attr)


class _CodeCache:
    """Code objects of ``exec``'d source texts, by text, and compiled regular expressions, by ("re", engine
    version, pattern, flags), loaded from and saved to one marshal file."""

    KEEP = 400   # entries; a plugin process uses about 100

    def __init__(self, path: str):
        self.path = path
        self.codes: dict = {}
        self.used: set = set()
        self.added = False
        try:
            # loads of the bytes, not load of the file: marshal.load reads a file piece by piece through
            # its Python-level read methods, which here costs ten times the unmarshalling itself
            with open(path, "rb") as f:
                codes = marshal.loads(f.read())
            if isinstance(codes, dict):
                self.codes = codes
        except (OSError, EOFError, ValueError, TypeError):
            pass

    def exec(self, source, globals=None, locals=None):
        """``exec`` for a module that passes its globals (dataclasses does): a text it has run before is
        not compiled again. Compiled with no inherited flags, as dataclasses' own ``exec`` does."""
        if globals is None or not isinstance(source, str):
            caller = sys._getframe(1)
            return exec(source, caller.f_globals if globals is None else globals,
                        (caller.f_locals if globals is None else globals) if locals is None else locals)
        code = self.codes.get(source)
        if type(code) is not types.CodeType:
            code = self.codes[source] = compile(source, "<string>", "exec", dont_inherit=True)
            self.added = True
        self.used.add(source)
        return exec(code, globals, globals if locals is None else locals)

    def compile_regex(self, pattern, flags=0):
        """``re._compiler.compile`` for a one-request process: a pattern compiled before goes straight to
        the C engine. A miss records what the real compile hands the engine (not thread-safe: the engine
        module is swapped during it)."""
        compiler = sys.modules["re._compiler"]
        if type(pattern) not in (str, bytes) or flags & compiler.SRE_FLAG_DEBUG:
            return self.real_compile(pattern, flags)
        key = ("re", compiler.MAGIC, pattern, flags)
        args = self.codes.get(key)
        if args is not None:
            try:
                compiled = compiler._sre.compile(pattern, *args)
                self.used.add(key)
                return compiled
            except (TypeError, ValueError, RuntimeError):
                pass   # an entry that no longer fits: compile anew
        engine = compiler._sre
        recorder = _EngineRecorder(engine)
        compiler._sre = recorder
        try:
            compiled = self.real_compile(pattern, flags)
        finally:
            compiler._sre = engine
        if recorder.args is not None and recorder.args[0] is pattern:
            self.codes[key] = recorder.args[1:]
            self.used.add(key)
            self.added = True
        return compiled

    def hook_regex(self) -> None:
        import re   # noqa: F401 (loads re._compiler)

        compiler = sys.modules["re._compiler"]
        if getattr(compiler.compile, "__self__", None) is not self:
            self.real_compile = compiler.compile
            compiler.compile = self.compile_regex

    def save(self) -> None:
        """Writes the cache when this process compiled something new; a cache that cannot be written (a
        read-only tree) only costs the compiling again."""
        if not self.added:
            return
        codes = self.codes
        if len(codes) > self.KEEP:   # texts of classes since changed or gone: keep what this run used
            codes = {source: codes[source] for source in self.used}
        from .files import atomic_write

        try:
            data = marshal.dumps(codes)
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            atomic_write(self.path, data)
            self.added = False
        except (OSError, ValueError):   # ValueError: an entry marshal cannot take; the run still counts
            pass


class _EngineRecorder:
    """Stands for ``_sre`` in ``re._compiler`` during one compile: keeps the arguments of ``compile``."""

    def __init__(self, engine):
        self.engine = engine
        self.args = None

    def compile(self, *args):
        # plain ints: the opcodes in ``code`` are int subclasses, which marshal does not take
        self.args = (args[0], int(args[1]), [int(c) for c in args[2]], int(args[3]), dict(args[4]),
                     tuple(args[5]))
        return self.engine.compile(*args)

    def __getattr__(self, name):
        return getattr(self.engine, name)


_code_cache: _CodeCache | None = None


def code_cache_path(plugin: str) -> str:
    """One file per plugin: loading a file costs in proportion to what it holds."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__",
                        f"compiled-code.{plugin}.{sys.implementation.cache_tag}.marshal")


def cache_compiled_code(plugin: str, path: str | None = None) -> None:
    """Before the first use of dataclasses and json: the methods dataclasses generates and the regular
    expressions compiled in ``plugin``'s process are compiled once per installation (``path``: another
    cache file). Only for one-request processes (see _CodeCache.compile_regex)."""
    global _code_cache
    if _code_cache is None:
        _code_cache = _CodeCache(path or code_cache_path(plugin))
    _code_cache.hook_regex()
    import dataclasses

    dataclasses.exec = _code_cache.exec


def save_compiled_code() -> None:
    if _code_cache is not None:
        _code_cache.save()


def _lazy_package(name: str, search=None):
    """Registers package ``name`` with its ``__init__`` deferred until a package-level name is asked for."""
    spec = _PathFinder.find_spec(name, search)   # search None: sys.path (``name`` is top-level then)
    if spec is None or not spec.submodule_search_locations:
        return None
    package = _module_from_spec(spec)

    def __getattr__(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        import importlib
        import importlib.util

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


def _deferred_call(module: str, attr: str):
    """A callable standing for ``module.attr`` that imports ``module`` when first called."""
    def call(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__qualname__ = call.__name__ = attr
    return call


class _QuickArchLoader:
    """Runs pyroute2.config with platform.architecture answering from the pointer size and platform.uname
    from os.uname (its ``processor`` field, which pyroute2 never reads, runs ``uname -p``: another fork and
    exec). ``platform`` itself (~1.5 ms), ``signal`` (~1 ms, its enums) and ``multiprocessing`` (~3 ms;
    pyroute2 keeps its Pipe, Queue and Process for later calls) are given as stand-ins when nobody has
    imported them yet. The modules are as they were as soon as pyroute2.config has run."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        stand_ins = {}
        if "platform" in sys.modules:
            platform = sys.modules["platform"]
            real = platform.architecture, platform.uname
            platform.architecture, platform.uname = _pointer_size_architecture, _uname_without_processor
        else:
            real = None
            stand_ins["platform"] = platform = types.ModuleType("platform")
            platform.architecture, platform.uname = _pointer_size_architecture, _uname_without_processor
            platform.machine = lambda: _uname_without_processor().machine
        if "signal" not in sys.modules:   # it reads SIGUSR1 only (for its remote transport, as a number)
            import _signal

            stand_ins["signal"] = signal = types.ModuleType("signal")
            signal.SIGUSR1 = _signal.SIGUSR1
        if "multiprocessing" not in sys.modules:
            stand_ins["multiprocessing"] = mp = types.ModuleType("multiprocessing")
            for attr in ("Pipe", "Queue", "Process"):
                setattr(mp, attr, _deferred_call("multiprocessing", attr))
        sys.modules.update(stand_ins)
        try:
            self.loader.exec_module(module)
        finally:
            if real is not None:
                platform.architecture, platform.uname = real
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]


class _DeferredModuleLoader:
    """A module whose own code runs when first needed, in the same module object: until then it holds
    what ``stand_ins`` puts there, and any other public name runs the real code at once."""

    def __init__(self, loader):
        import threading

        self.loader = loader
        self.lock = threading.RLock()
        self.done = False

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        loader = self

        def real():
            with loader.lock:
                if not loader.done:
                    module.__dict__.pop("__getattr__", None)
                    loader.loader.exec_module(module)
                    loader.done = True
            return module

        def __getattr__(attr: str):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return getattr(real(), attr)

        self.stand_ins(module, real)
        module.__getattr__ = __getattr__

    def stand_ins(self, module, real) -> None:
        raise NotImplementedError


class _DeferredTcLoader(_DeferredModuleLoader):
    """``pyroute2.netlink.rtnl.tcmsg`` as a package whose own code runs when first needed.

    Until then it holds stand-ins for the two names other pyroute2 modules import from it: ``tcmsg``
    (which they only call, to build or parse a tc message) and ``plugins`` (a mapping they only read).
    Either one, any other package-level name, or an import of ``tcmsg`` after the real code ran, gives
    the real objects; its submodules import as usual."""

    def stand_ins(self, module, real) -> None:
        def tcmsg(*args, **kwargs):
            return real().tcmsg(*args, **kwargs)

        module.tcmsg = tcmsg
        module.plugins = _LazyMapping(lambda: real().plugins)


class _LazyMapping(Mapping):
    """A read-only view of the mapping ``load()`` returns, called on first use."""

    def __init__(self, load):
        self._load = load

    def __getitem__(self, key):
        return self._load()[key]

    def __iter__(self):
        return iter(self._load())

    def __len__(self):
        return len(self._load())


# pyroute2's link-kind modules (bond, vlan, vxlan, ...): ifinfmsg imports all fifteen to fill its
# IFLA_INFO_DATA table, ~6 ms here, though a plugin run decodes at most one or two of those kinds.
_LINK_KINDS = "pyroute2.netlink.rtnl.ifinfmsg.plugins."


class _DeferredKindLoader(_DeferredModuleLoader):
    """A link-kind module whose own code runs when first needed. Until then its class (named as the
    module) is a ``_LinkKind`` placeholder, which ifinfmsg's table resolves on lookup (``_LazyKinds``);
    any other name (``vlan.flags``) runs the real code at once."""

    def stand_ins(self, module, real) -> None:
        kind = module.__name__.rpartition(".")[2]
        setattr(module, kind, _LinkKind(kind, real))


class _LinkKind:
    """Stands for a link-kind class in ifinfmsg's table until a lookup resolves it."""

    def __init__(self, kind: str, load):
        self.kind = kind
        self.load = load

    def resolve(self):
        return getattr(self.load(), self.kind)


class _LazyKinds(dict):
    """ifinfmsg's kind -> IFLA_INFO_DATA class table, resolving a placeholder when it is looked up
    (``get``, ``[]``, ``pop``: every lookup pyroute2 makes)."""

    def _real(self, kind, value):
        if type(value) is _LinkKind:
            value = value.resolve()
            dict.__setitem__(self, kind, value)
        return value

    def get(self, kind, default=None):
        return self._real(kind, dict.get(self, kind, default))

    def __getitem__(self, kind):
        return self._real(kind, dict.__getitem__(self, kind))

    def pop(self, kind, *default):
        value = dict.pop(self, kind, *default)
        return value.resolve() if type(value) is _LinkKind else value


class _LinkKindsLoader:
    """Runs pyroute2.netlink.rtnl.ifinfmsg, then makes its kind table a ``_LazyKinds``."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        info = module.ifinfbase.ifinfo
        info.data_map = _LazyKinds(info.data_map)


class _LeanFinder:
    LOADERS = {"pyroute2.config": _QuickArchLoader, "pyroute2.netlink.rtnl.tcmsg": _DeferredTcLoader,
               "pyroute2.netlink.rtnl.ifinfmsg": _LinkKindsLoader}

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        wrapper = cls.LOADERS.get(name)
        if wrapper is None and name.startswith(_LINK_KINDS):
            wrapper = _DeferredKindLoader
        if wrapper is None:
            return None
        spec = _PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = wrapper(spec.loader)
        return spec
