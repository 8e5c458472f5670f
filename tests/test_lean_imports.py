"""What cni_plugins.lean_imports defers still works when it is used, each case in a fresh interpreter (the
deferrals act on sys.modules at start-up, which the test process has long filled)."""

import subprocess
import sys
import textwrap

import pytest


def run_fresh(code: str, *args: str) -> str:
    """Runs ``code`` in a new interpreter with this one's import path; its stdout."""
    prelude = f"import sys\nsys.path[:] = {sys.path!r}\n"
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", prelude + textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_deferred_standard_module_runs_its_code_on_first_use():
    out = run_fresh("""
        from cni_plugins import lean_imports
        lean_imports.defer_stdlib(("inspect",))
        import dataclasses

        @dataclasses.dataclass
        class Documented:
            "Has a docstring, so dataclasses does not need inspect to write one."
            x: int

        import inspect   # a second import statement must not run it either
        print("signature" in vars(inspect))
        print(inspect.signature(Documented))
        from inspect import isclass
        print(isclass(Documented))
    """)
    assert out.split("\n")[:3] == ["False", "(x: int) -> None", "True"]


def test_dataclass_without_docstring_still_gets_one_with_inspect_deferred():
    out = run_fresh("""
        from cni_plugins import lean_imports
        lean_imports.defer_stdlib(("inspect",))
        import dataclasses

        @dataclasses.dataclass
        class Bare:
            x: int

        print(Bare.__doc__)
    """)
    assert out.strip() == "Bare(x: int)"


def test_pyroute2_loads_without_tc_and_multiprocessing_code_and_builds_tc_messages_later():
    out = run_fresh("""
        from cni_plugins import lean_imports
        lean_imports.install()
        import pyroute2.iproute.linux as linux
        print("pyroute2.netlink.rtnl.tcmsg.sched_htb" in sys.modules, "multiprocessing" in sys.modules,
              "platform" in sys.modules)

        from pyroute2.netlink.rtnl.tcmsg import tcmsg
        msg = tcmsg()
        msg["index"] = 7
        msg["attrs"] = [["TCA_KIND", "tbf"]]
        msg.encode()
        print(type(msg).__name__, msg.get_attr("TCA_KIND"))
        print("htb" in linux.tc_plugins, linux.tc_plugins["htb"].__name__)

        from pyroute2 import config
        print("multiprocessing" in sys.modules, callable(config.MpQueue))
        import os, platform
        print(tuple(config.uname[:5]) == tuple(os.uname()), config.machine == platform.machine(),
              config.arch == platform.architecture()[0])
    """)
    assert out.split("\n")[:5] == ["False False False", "tcmsg tbf", "True pyroute2.netlink.rtnl.tcmsg.sched_htb",
                                   "False True", "True True True"]


@pytest.mark.parametrize("name, use", [("subprocess", "subprocess.run(['true']).returncode == 0"),
                                       ("random", "0 <= random.random() < 1"),
                                       ("pkgutil", "callable(pkgutil.iter_modules)"),
                                       ("traceback", "traceback.format_stack()[-1].startswith('  File')")])
def test_every_deferred_standard_module_is_usable(name, use):
    out = run_fresh(f"""
        from cni_plugins import lean_imports
        lean_imports.defer_stdlib()
        import {name}
        print("__getattr__" in vars({name}), {use}, "__getattr__" in vars({name}))
    """)
    assert out.strip() == "True True False"


DATACLASSES = """
    import builtins, dataclasses
    compiled = []
    real_compile = builtins.compile
    builtins.compile = lambda *a, **k: compiled.append(a[1]) or real_compile(*a, **k)
    from cni_plugins import lean_imports
    lean_imports.cache_dataclass_code("test", sys.argv[1])

    @dataclasses.dataclass(frozen=True)
    class Frozen:
        "A frozen one, with a default."
        x: int
        y: tuple = ()

    @dataclasses.dataclass(order=True)
    class Ordered:
        "Ordered."
        n: int

    lean_imports.save_dataclass_code()
    a = Frozen(1)
    try:
        a.x = 2
    except dataclasses.FrozenInstanceError:
        print("frozen")
    print(repr(a), a == Frozen(1), hash(a) == hash(Frozen(1)), Ordered(1) < Ordered(2))
    print(Frozen.__init__.__annotations__ == {"x": int, "y": tuple, "return": None})
    print(len(compiled))
"""


def test_dataclass_methods_from_the_code_cache_behave_as_compiled_ones(tmp_path):
    cache = str(tmp_path / "codes.marshal")
    first = run_fresh(DATACLASSES, cache).split("\n")
    second = run_fresh(DATACLASSES, cache).split("\n")
    assert first[:3] == second[:3] == ["frozen", "Frozen(x=1, y=()) True True True", "True"]
    assert int(first[3]) > 0 and second[3] == "0"   # the second process compiled nothing


def test_unreadable_code_cache_is_compiled_anew(tmp_path):
    cache = tmp_path / "codes.marshal"
    cache.write_bytes(b"not marshal data")
    out = run_fresh(DATACLASSES, str(cache)).split("\n")
    assert out[:3] == ["frozen", "Frozen(x=1, y=()) True True True", "True"]


def test_launcher_preload_maps_libnftables_without_making_a_context():
    out = run_fresh("""
        from pynet.launcher import network
        with open("/proc/self/maps") as f:
            before = "libnftables" in f.read()
        network.preload()
        with open("/proc/self/maps") as f:
            after = "libnftables" in f.read()
        from cni_plugins.nft import handle
        print(before, after, sum(p._made for p in handle._POOLS.values()))
    """)
    assert out.strip() == "False True 0"


def test_plugins_load_without_running_inspect():
    """Every dataclass of the plugins' start-up path has a docstring: without one, dataclasses runs the
    deferred inspect module to write it (dnsname's are its own)."""
    out = run_fresh("""
        from cni_plugins import lean_imports, registry
        lean_imports.defer_stdlib(("inspect",))
        lean_imports.install()
        import cni_plugins.skel, cni_plugins.delegate, cni_plugins.results
        for name in registry.NAMES:
            if name != "dnsname":
                registry.get(name)
        print("__getattr__" in vars(sys.modules["inspect"]))
    """)
    assert out.strip() == "True"
