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
        lean_imports.defer_stdlib()   # as a plugin process: subprocess (which imports signal) deferred
        lean_imports.install()
        import pyroute2.iproute.linux as linux
        print("pyroute2.netlink.rtnl.tcmsg.sched_htb" in sys.modules, "multiprocessing" in sys.modules,
              "platform" in sys.modules, "signal" in sys.modules)

        from pyroute2.netlink.rtnl.tcmsg import tcmsg
        msg = tcmsg()
        msg["index"] = 7
        msg["attrs"] = [["TCA_KIND", "tbf"]]
        msg.encode()
        print(type(msg).__name__, msg.get_attr("TCA_KIND"))
        print("htb" in linux.tc_plugins, linux.tc_plugins["htb"].__name__)

        from pyroute2 import config
        print("multiprocessing" in sys.modules, callable(config.MpQueue))
        import os, platform, signal
        print(tuple(config.uname[:5]) == tuple(os.uname()), config.machine == platform.machine(),
              config.arch == platform.architecture()[0], config.signal_stop_remote == signal.SIGUSR1,
              signal.Signals.SIGUSR1 is signal.SIGUSR1)
    """)
    assert out.split("\n")[:5] == ["False False False False", "tcmsg tbf",
                                   "True pyroute2.netlink.rtnl.tcmsg.sched_htb", "False True",
                                   "True True True True True"]


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
    lean_imports.cache_compiled_code("test", sys.argv[1])

    @dataclasses.dataclass(frozen=True)
    class Frozen:
        "A frozen one, with a default."
        x: int
        y: tuple = ()

    @dataclasses.dataclass(order=True)
    class Ordered:
        "Ordered."
        n: int

    lean_imports.save_compiled_code()
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


REGEXES = """
    import re
    from cni_plugins import lean_imports
    lean_imports.cache_compiled_code("test", sys.argv[1])
    parsed = []
    real_parse = sys.modules["re._parser"].parse
    sys.modules["re._parser"].parse = lambda *a: parsed.append(a[0]) or real_parse(*a)
    import json
    word = re.compile(r"(?P<key>[a-z]+)=(?P<value>\\d+)", re.I)
    raw = re.compile(rb"^\\x00+$")
    lean_imports.save_compiled_code()
    m = word.search("-- Port=8080 --")
    print(m.group("key"), m["value"], m.span(), word.groupindex["value"], word.groups, word.flags & re.I != 0)
    print(bool(raw.match(b"\\x00\\x00")), json.loads('{"a": [1.5e3, "\\u00e9"]}'))
    print(len(parsed))
"""


def test_regexes_from_the_code_cache_match_as_compiled_ones(tmp_path):
    """The second process compiles no pattern (json's own included) and matches, groups and flags agree."""
    cache = str(tmp_path / "codes.marshal")
    first = run_fresh(REGEXES, cache).split("\n")
    second = run_fresh(REGEXES, cache).split("\n")
    assert first[:2] == second[:2] == ["Port 8080 (3, 12) 2 2 True", "True {'a': [1500.0, 'é']}"]
    assert int(first[2]) >= 2 and second[2] == "0"


def test_logger_taken_before_logging_ran_logs_as_the_real_one():
    out = run_fresh("""
        from cni_plugins import lean_imports
        lean_imports.defer_stdlib(("logging",))
        import io, logging
        log = logging.getLogger("pynet.test")   # as pyroute2's modules do at import
        print("__getattr__" in vars(logging))
        log.setLevel(logging.INFO)
        buf = io.StringIO()
        log.addHandler(logging.StreamHandler(buf))
        log.info("x=%d", 3)
        print(buf.getvalue().strip(), log._logger is logging.getLogger("pynet.test"), "__getattr__" in vars(logging))
    """)
    assert out.split("\n")[:2] == ["True", "x=3 True False"]


def test_link_kinds_load_when_looked_up_and_decode_as_before():
    """ifinfmsg's link-kind modules (vxlan, bond...) stay unrun until a link of that kind is decoded or
    built; then IFLA_INFO_DATA reads as pyroute2 always read it (in a namespace of its own, gone at exit)."""
    out = run_fresh("""
        from cni_plugins import lean_imports, syscalls
        lean_imports.install()
        syscalls.unshare(syscalls.CLONE_NEWNET)
        from pyroute2.iproute.linux import IPRoute
        kinds = "pyroute2.netlink.rtnl.ifinfmsg.plugins."
        ran = lambda name: "__getattr__" not in vars(sys.modules[kinds + name])
        print(ran("vxlan"), ran("bond"))
        with IPRoute() as ipr:
            ipr.link("add", ifname="vx0", kind="vxlan", vxlan_id=42, vxlan_port=4790)
            info = ipr.link("get", ifname="vx0")[0].get_attr("IFLA_LINKINFO")
        data = info.get_attr("IFLA_INFO_DATA")
        print(info.get_attr("IFLA_INFO_KIND"), data.get_attr("IFLA_VXLAN_ID"), data.get_attr("IFLA_VXLAN_PORT"))
        print(ran("vxlan"), ran("bond"))
    """)
    assert out.split("\n")[:3] == ["False False", "vxlan 42 4790", "True False"]


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
