"""The chain runner against a recording fake plugin: what each plugin receives (stdin, CNI_* env), in which
order, and what lands in the libcni cache. No kernel state is touched here; tests/test_cli_attach.py covers
real plugins in sandbox namespaces."""

from __future__ import annotations

import base64
import json
import os
import textwrap

import pytest

from cni_plugins.errors import CNIError
from pynet.runner import ChainError, Runner
from pynet.runner.cache import KIND, CacheEntry, ResultCache
from pynet.runner.netconf import NetworkNotFound, list_networks, load_network

FAKE = textwrap.dedent("""\
    #!/usr/bin/python3
    # Records its invocation; ADD adds an interface named after "tag" to prevResult.
    import json, os, sys
    conf = json.load(sys.stdin)
    cmd = os.environ["CNI_COMMAND"]
    with open(conf["log"], "a") as f:
        f.write(json.dumps({"cmd": cmd, "conf": conf,
                            "env": {k: v for k, v in os.environ.items() if k.startswith("CNI_")}}) + "\\n")
    if conf.get("fail") == cmd:
        print(json.dumps({"cniVersion": conf["cniVersion"], "code": 7, "msg": "told to fail", "details": "x"}))
        sys.exit(1)
    if cmd == "ADD":
        res = conf.get("prevResult") or {"cniVersion": conf["cniVersion"], "interfaces": [], "ips": []}
        res["interfaces"] = res.get("interfaces", []) + [{"name": conf.get("tag", "x")}]
        if not res["ips"]:
            res["ips"] = [{"address": "10.9.0.2/24", "gateway": "10.9.0.1"}]
        print(json.dumps(res))
""")


@pytest.fixture
def env(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("fake", "fake2"):
        (bindir / name).write_text(FAKE)
        (bindir / name).chmod(0o755)
    confdir = tmp_path / "net.d"
    confdir.mkdir()
    log = tmp_path / "log"

    class Env:
        runner = Runner(str(confdir), [str(tmp_path / "nothing-here"), str(bindir)], str(tmp_path / "cache"))
        config_dir = confdir
        cache_dir = tmp_path / "cache"

        @staticmethod
        def write(filename, obj):
            (confdir / filename).write_text(json.dumps(obj))

        @staticmethod
        def calls():
            if not log.exists():
                return []
            return [json.loads(line) for line in log.read_text().splitlines()]

        @staticmethod
        def plugin(tag, **kw):
            return {"type": "fake", "tag": tag, "log": str(log), **kw}

    return Env


def chain(env, *plugins, version="1.1.0", name="net1", **top):
    return {"cniVersion": version, "name": name, "plugins": list(plugins) or [env.plugin("a"), env.plugin("b")],
            **top}


def test_add_threads_prev_result_and_injects_name_and_version(env):
    env.write("10-net1.conflist", chain(env))
    result = env.runner.add("net1", "ctr1", "/run/netns/x", "eth0")
    assert [i["name"] for i in result["interfaces"]] == ["a", "b"]
    first, second = env.calls()
    assert first["cmd"] == second["cmd"] == "ADD"
    assert "prevResult" not in first["conf"]
    assert [i["name"] for i in second["conf"]["prevResult"]["interfaces"]] == ["a"]
    assert second["conf"]["name"] == "net1" and second["conf"]["cniVersion"] == "1.1.0"
    assert first["env"] == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr1", "CNI_NETNS": "/run/netns/x",
                            "CNI_IFNAME": "eth0", "CNI_ARGS": "", "CNI_PATH": os.pathsep.join(env.runner.cni_path)}


def test_capability_args_reach_only_plugins_declaring_them(env):
    env.write("net1.conflist", chain(env, env.plugin("a", capabilities={"ips": True, "mac": False}),
                                     env.plugin("b", capabilities={"portMappings": True})))
    caps = {"ips": ["10.9.0.5/24"], "mac": "02:00:00:00:00:01", "portMappings": [{"hostPort": 80,
                                                                                "containerPort": 8080}]}
    env.runner.add("net1", "ctr1", "/run/netns/x", "eth0", capability_args=caps, cni_args={"IgnoreUnknown": "1"})
    a, b = env.calls()
    assert a["conf"]["runtimeConfig"] == {"ips": ["10.9.0.5/24"]}
    assert b["conf"]["runtimeConfig"] == {"portMappings": caps["portMappings"]}
    assert a["env"]["CNI_ARGS"] == "IgnoreUnknown=1"


def test_add_writes_libcni_cache_entry(env):
    env.write("net1.conflist", chain(env))
    result = env.runner.add("net1", "ctr1", "/run/netns/x", "eth0", capability_args={"ips": ["10.9.0.5/24"]},
                            cni_args=[("K8S_POD_NAME", "p")])
    path = env.cache_dir / "results" / "net1-ctr1-eth0"
    raw = json.loads(path.read_text())
    assert raw == {"kind": "cniCacheV1", "containerId": "ctr1",
                   "config": base64.b64encode((env.config_dir / "net1.conflist").read_bytes()).decode(),
                   "ifName": "eth0", "networkName": "net1", "netns": "/run/netns/x",
                   "cniArgs": [["K8S_POD_NAME", "p"]], "capabilityArgs": {"ips": ["10.9.0.5/24"]},
                   "result": result}
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_del_runs_in_reverse_with_cached_result_and_cached_runtime_args(env):
    env.write("net1.conflist", chain(env, env.plugin("a", capabilities={"ips": True}), env.plugin("b")))
    result = env.runner.add("net1", "ctr1", "/run/netns/x", "eth0", capability_args={"ips": ["10.9.0.5/24"]},
                            cni_args={"A": "1"})
    env.runner.delete("net1", "ctr1", "eth0")
    dels = [c for c in env.calls() if c["cmd"] == "DEL"]
    assert [c["conf"]["tag"] for c in dels] == ["b", "a"]
    assert all(c["conf"]["prevResult"] == result for c in dels)
    assert dels[1]["conf"]["runtimeConfig"] == {"ips": ["10.9.0.5/24"]}
    assert dels[0]["env"]["CNI_NETNS"] == "/run/netns/x" and dels[0]["env"]["CNI_ARGS"] == "A=1"
    assert not (env.cache_dir / "results" / "net1-ctr1-eth0").exists()
    env.runner.delete("net1", "ctr1", "eth0")  # idempotent: no cache, DEL without prevResult
    assert "prevResult" not in env.calls()[-1]["conf"]


def test_del_reports_each_plugin_once_its_del_is_done_in_chain_order_reversed(env):
    env.write("net1.conflist", chain(env, env.plugin("a"), env.plugin("b")))
    env.runner.add("net1", "ctr1", "/run/netns/x", "eth0")
    seen = []
    env.runner.delete("net1", "ctr1", "eth0",
                      after_step=lambda plugin: seen.append((plugin["tag"], len(env.calls()))))
    assert seen == [("b", 3), ("a", 4)]   # each after its own DEL ran (2 ADDs logged before)


def test_failed_add_runs_del_of_the_chain_and_caches_nothing(env):
    env.write("net1.conflist", chain(env, env.plugin("a"), env.plugin("b", fail="ADD")))
    with pytest.raises(ChainError) as exc:
        env.runner.add("net1", "ctr1", "/run/netns/x", "eth0")
    assert exc.value.code == 7 and 'type="fake"' in str(exc.value) and "told to fail" in str(exc.value)
    assert [(c["cmd"], c["conf"]["tag"]) for c in env.calls()] == [("ADD", "a"), ("ADD", "b"), ("DEL", "b"),
                                                                    ("DEL", "a")]
    assert not (env.cache_dir / "results").exists() or not list((env.cache_dir / "results").iterdir())


def test_check_uses_cached_result_and_honours_disable_check(env):
    env.write("net1.conflist", chain(env))
    result = env.runner.add("net1", "ctr1", "/run/netns/x", "eth0")
    env.runner.check("net1", "ctr1", "eth0")
    checks = [c for c in env.calls() if c["cmd"] == "CHECK"]
    assert [c["conf"]["tag"] for c in checks] == ["a", "b"]
    assert checks[0]["conf"]["prevResult"] == result and checks[0]["env"]["CNI_NETNS"] == "/run/netns/x"
    env.write("net1.conflist", chain(env, disableCheck=True))
    env.runner.check("net1", "ctr1", "eth0")
    assert len([c for c in env.calls() if c["cmd"] == "CHECK"]) == 2


def test_check_refused_before_0_4_0(env):
    env.write("net1.conflist", chain(env, version="0.3.1"))
    with pytest.raises(CNIError, match="CHECK"):
        env.runner.check("net1", "ctr1", "eth0")


def test_status_runs_each_plugin_only_from_1_1_0(env):
    env.write("net1.conflist", chain(env))
    env.write("net2.conflist", chain(env, name="net2", version="1.0.0"))
    assert env.runner.status("net1") is True
    assert env.runner.status("net2") is False
    status = [c for c in env.calls() if c["cmd"] == "STATUS"]
    assert [c["conf"]["tag"] for c in status] == ["a", "b"]
    assert status[0]["env"]["CNI_CONTAINERID"] == ""


def test_status_error_names_the_plugin(env):
    env.write("net1.conflist", chain(env, env.plugin("a", fail="STATUS")))
    with pytest.raises(ChainError, match='type="fake" failed \\(status\\): told to fail'):
        env.runner.status("net1")


def test_gc_deletes_stale_attachments_then_sends_valid_attachments(env):
    env.write("net1.conflist", chain(env))
    env.runner.add("net1", "live", "/run/netns/x", "eth0")
    env.runner.add("net1", "dead", "/run/netns/y", "eth0")
    removed = env.runner.gc("net1", [{"containerID": "live", "ifname": "eth0"}])
    assert [(e.container_id, e.ifname) for e in removed] == [("dead", "eth0")]
    dels = [c for c in env.calls() if c["cmd"] == "DEL"]
    assert {c["env"]["CNI_CONTAINERID"] for c in dels} == {"dead"} and dels[0]["env"]["CNI_NETNS"] == "/run/netns/y"
    gcs = [c for c in env.calls() if c["cmd"] == "GC"]
    assert [c["conf"]["tag"] for c in gcs] == ["a", "b"]
    assert gcs[0]["conf"]["cni.dev/valid-attachments"] == [{"containerID": "live", "ifname": "eth0"}]
    assert [e.container_id for e in env.runner.cache.entries()] == ["live"]


def test_gc_disabled_does_nothing(env):
    env.write("net1.conflist", chain(env, disableGC=True))
    env.runner.add("net1", "dead", "/run/netns/y", "eth0")
    assert env.runner.gc("net1", []) == []
    assert [c["cmd"] for c in env.calls()] == ["ADD", "ADD"]


def test_conflists_sorted_by_file_name_first_name_wins(env):
    env.write("20-net1.conflist", chain(env, env.plugin("second")))
    env.write("10-net1.conflist", chain(env, env.plugin("first")))
    conf = load_network(str(env.config_dir), "net1")
    assert conf.path.endswith("10-net1.conflist") and conf.plugins[0]["tag"] == "first"
    networks, broken = list_networks(str(env.config_dir))
    assert [n.path for n in networks] == [conf.path] and broken == []


def test_single_plugin_conf_is_up_converted(env):
    env.write("99-single.conf", dict(env.plugin("solo"), name="single", cniVersion="1.0.0"))
    result = env.runner.add("single", "ctr1", "/run/netns/x", "eth0")
    assert [i["name"] for i in result["interfaces"]] == ["solo"]
    assert env.calls()[0]["conf"]["name"] == "single"


def test_cni_versions_picks_highest_supported(env):
    env.write("net1.conflist", chain(env, version="0.4.0", cniVersions=["1.0.0", "9.9.9", "0.3.1"]))
    assert load_network(str(env.config_dir), "net1").cni_version == "1.0.0"


def test_plugins_from_network_subdir_unless_only_inlined(env):
    env.write("net1.conflist", chain(env, env.plugin("inline")))
    (env.config_dir / "net1").mkdir()
    (env.config_dir / "net1" / "50-extra.conf").write_text(json.dumps(env.plugin("extra")))
    assert [p["tag"] for p in load_network(str(env.config_dir), "net1").plugins] == ["inline", "extra"]
    env.write("net1.conflist", chain(env, env.plugin("inline"), loadOnlyInlinedPlugins=True))
    assert [p["tag"] for p in load_network(str(env.config_dir), "net1").plugins] == ["inline"]


def test_unknown_network_and_missing_plugin_are_clear_errors(env):
    with pytest.raises(NetworkNotFound, match='no net configuration with name "nope"'):
        env.runner.add("nope", "ctr1", "/run/netns/x", "eth0")
    env.write("net1.conflist", chain(env, {"type": "no-such-plugin"}))
    with pytest.raises(CNIError, match="no-such-plugin"):
        env.runner.add("net1", "ctr1", "/run/netns/x", "eth0")


def test_del_after_network_removed_uses_cached_config(env):
    env.write("net1.conflist", chain(env))
    env.runner.add("net1", "ctr1", "/run/netns/x", "eth0")
    (env.config_dir / "net1.conflist").unlink()
    env.runner.delete("net1", "ctr1", "eth0")
    assert [c["conf"]["tag"] for c in env.calls() if c["cmd"] == "DEL"] == ["b", "a"]


def test_cached_result_converted_to_config_version(env):
    env.write("net1.conflist", chain(env, version="0.4.0"))
    cache = ResultCache(str(env.cache_dir))
    cache.write(CacheEntry("ctr1", "net1", "eth0", config=b"{}", netns="/run/netns/x",
                           result={"cniVersion": "1.0.0", "ips": [{"address": "10.9.0.2/24"}]}))
    env.runner.delete("net1", "ctr1", "eth0")
    prev = env.calls()[0]["conf"]["prevResult"]
    assert prev["cniVersion"] == "0.4.0" and prev["ips"][0]["version"] == "4"


def test_foreign_cache_files_are_read_and_junk_is_skipped(env):
    results = env.cache_dir / "results"
    results.mkdir(parents=True)
    entry = {"kind": KIND, "containerId": "abc", "config": base64.b64encode(b'{"name":"n"}').decode(),
             "ifName": "eth0", "networkName": "n", "netns": "/run/netns/foo",
             "result": {"cniVersion": "1.0.0"}}
    (results / "n-abc-eth0").write_text(json.dumps(entry))
    (results / "n-junk-eth0").write_text("not json")
    (results / "n-old-eth0").write_text(json.dumps({"kind": "other"}))
    [got] = env.runner.cache.entries()
    assert (got.container_id, got.network, got.ifname, got.netns, got.config) == \
        ("abc", "n", "eth0", "/run/netns/foo", b'{"name":"n"}')
    assert got.to_json() == entry


# -- our plugins in-process, foreign ones executed ---------------------------------------------------------
def _bad_bridge_network(tmp_path):
    """Our bridge with a config it refuses before touching anything (no kernel state involved)."""
    from netns_fixtures import OUR_PLUGINS

    runner = Runner(str(tmp_path / "net.d"), [OUR_PLUGINS], str(tmp_path / "cache"))
    return runner, {"cniVersion": "1.0.0", "name": "bad", "plugins": [{"type": "bridge", "bridge": 5}]}


def _chain_error(runner, conf) -> ChainError:
    with pytest.raises(ChainError) as info:
        runner.add(conf, "ctr1", "/run/netns/does-not-exist", "eth0")
    return info.value


def test_our_plugins_run_in_process_and_fail_as_the_executed_ones_do(tmp_path, monkeypatch):
    from cni_plugins import delegate

    runner, conf = _bad_bridge_network(tmp_path)
    executed = []
    real_exec = delegate.exec_plugin
    monkeypatch.setattr(delegate, "exec_plugin", lambda *a, **kw: executed.append(a[0]) or real_exec(*a, **kw))
    in_process = _chain_error(runner, conf)
    assert executed == []                                           # ADD and the rollback DEL: no process
    assert runner.version("bridge")["cniVersion"] and executed == []
    monkeypatch.setattr(delegate.registry, "ours", lambda exe: None)
    as_program = _chain_error(runner, conf)
    assert executed                                                 # the same plugin, executed this time
    assert (in_process.code, in_process.msg, in_process.details, in_process.plugin_type) == \
        (as_program.code, as_program.msg, as_program.details, as_program.plugin_type)
    assert 'plugin type="bridge" failed (add)' in in_process.msg
    assert runner.cache.entries() == []


def test_plugins_of_other_installations_are_executed(env, monkeypatch):
    from cni_plugins import registry

    seen = []
    real_call = registry.ours
    monkeypatch.setattr(registry, "ours", lambda exe: seen.append(real_call(exe)) or seen[-1])
    env.write("net1.conflist", chain(env))
    env.runner.add("net1", "ctr1", "/run/netns/x", "eth0")
    assert seen == [None, None] and len(env.calls()) == 2
