"""The plugin skeleton as a runtime sees it: environment and stdin in, JSON (result or spec error) out.

Every case drives a real plugin executable inside the sandbox host netns. The environment checks live in
the shared skeleton, so they are run against each plugin whose module exists.
"""

import importlib.util
import json

import pytest

CONF = {"cniVersion": "1.0.0", "name": "skel-net", "type": "loopback"}

# Plugins whose module is written; each answers through the same skeleton.
PLUGINS = [name for name, module in (("loopback", "cni_plugins.loopback.plugin"), ("static", "cni_plugins.ipam.static"))
           if importlib.util.find_spec(module) is not None]


def conf_for(plugin: str, **extra) -> dict:
    conf = dict(CONF, type=plugin, **extra)
    if plugin == "static":
        conf = dict(conf, addresses=[{"address": "10.9.0.2/24"}])
    return conf


def env_for(cni, container, command="ADD", **overrides) -> dict:
    """The environment a runtime would pass; an override of None removes the variable."""
    env = cni.env(command, container, "eth0", "ctr1", "")
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def assert_error(inv, code: int, *words: str) -> dict:
    """A spec error: non-zero exit, stdout exactly one JSON object with all four keys, the message naming words."""
    assert inv.rc != 0, inv
    reply = json.loads(inv.stdout)  # stdout holds JSON and nothing else
    assert set(reply) == {"cniVersion", "code", "msg", "details"}, reply
    assert reply["code"] == code, reply
    for word in words:
        assert word in reply["msg"], (word, reply)
    return reply


# -- environment ---------------------------------------------------------------------------------

@pytest.mark.parametrize("plugin", PLUGINS)
def test_missing_cni_command_is_invalid_environment(cni, container_ns, plugin):
    inv = cni.invoke(plugin, "ADD", conf_for(plugin), env=env_for(cni, container_ns, CNI_COMMAND=None))
    assert_error(inv, 4, "CNI_COMMAND")


@pytest.mark.parametrize("plugin", PLUGINS)
def test_unknown_cni_command_is_invalid_environment(cni, container_ns, plugin):
    inv = cni.invoke(plugin, "FROB", conf_for(plugin), env=env_for(cni, container_ns, CNI_COMMAND="FROB"))
    assert_error(inv, 4, "CNI_COMMAND", "FROB")


@pytest.mark.parametrize("variable", ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH", "CNI_NETNS"])
@pytest.mark.parametrize("plugin", PLUGINS)
def test_add_without_required_variable_is_invalid_environment(cni, container_ns, plugin, variable):
    inv = cni.invoke(plugin, "ADD", conf_for(plugin), env=env_for(cni, container_ns, **{variable: None}))
    assert_error(inv, 4, variable, "missing")


@pytest.mark.parametrize("variable", ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"])
def test_check_without_required_variable_is_invalid_environment(cni, container_ns, variable):
    inv = cni.invoke("loopback", "CHECK", CONF, env=env_for(cni, container_ns, "CHECK", **{variable: None}))
    assert_error(inv, 4, variable)


def test_del_needs_no_netns(cni, container_ns):
    cni.add("loopback", CONF, container_ns)
    inv = cni.invoke("loopback", "DEL", CONF, env=env_for(cni, container_ns, "DEL", CNI_NETNS=None))
    assert inv.rc == 0, inv
    assert inv.stdout.strip() == b""


@pytest.mark.parametrize("container_id", ["has space", "-leading-dash", "semi;colon", "slash/inside"])
def test_invalid_container_id_is_invalid_environment(cni, container_ns, container_id):
    inv = cni.invoke("loopback", "ADD", CONF, env=env_for(cni, container_ns, CNI_CONTAINERID=container_id))
    assert_error(inv, 4, "CNI_CONTAINERID", repr(container_id))


def test_empty_container_id_is_missing(cni, container_ns):
    inv = cni.invoke("loopback", "ADD", CONF, env=env_for(cni, container_ns, CNI_CONTAINERID=""))
    assert_error(inv, 4, "CNI_CONTAINERID")


def test_podman_style_container_id_is_accepted(cni, container_ns):
    inv = cni.invoke("loopback", "ADD", CONF, env=env_for(cni, container_ns, CNI_CONTAINERID="a1" * 32))
    assert inv.rc == 0, inv


@pytest.mark.parametrize("ifname", ["a" * 16, "eth/0", "eth:0", ".", "..", "eth 0", "eth\t0"])
def test_invalid_ifname_is_invalid_environment(cni, container_ns, ifname):
    inv = cni.invoke("loopback", "ADD", CONF, env=env_for(cni, container_ns, CNI_IFNAME=ifname))
    assert_error(inv, 4, "CNI_IFNAME", repr(ifname))


def test_ifname_of_fifteen_characters_is_accepted(cni, container_ns):
    inv = cni.invoke("loopback", "ADD", CONF, env=env_for(cni, container_ns, CNI_IFNAME="a" * 15))
    assert inv.rc == 0, inv


@pytest.mark.parametrize("args", ["IgnoreUnknown", "K8S_POD_NAME=x;novalue", "=value"])
def test_malformed_cni_args_pair_is_invalid_environment(cni, container_ns, args):
    inv = cni.invoke("loopback", "ADD", CONF, env=env_for(cni, container_ns, CNI_ARGS=args))
    bad_pair = [p for p in args.split(";") if "=" not in p or p.startswith("=")][0]
    assert_error(inv, 4, "CNI_ARGS", repr(bad_pair))


def test_well_formed_cni_args_are_accepted(cni, container_ns):
    inv = cni.invoke("loopback", "ADD", CONF,
                     env=env_for(cni, container_ns, CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=web;EMPTY="))
    assert inv.rc == 0, inv


# -- network namespace ---------------------------------------------------------------------------

def test_netns_equal_to_plugins_own_is_invalid_environment(cni, host_ns):
    # The plugin runs inside host_ns, so host_ns is its own netns: configuring it would hit the host.
    inv = cni.invoke("loopback", "ADD", CONF, container=host_ns)
    assert_error(inv, 4, host_ns.path, "own network namespace")


@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_netns_that_does_not_exist_is_unknown_container(cni, command):
    path = "/run/netns/pynet-skel-never-created"
    inv = cni.invoke("loopback", command, CONF, container=path)
    assert_error(inv, 3, path)


def test_netns_path_that_is_not_a_netns_is_invalid_environment(cni, tmp_path):
    plain = tmp_path / "not-a-netns"
    plain.write_text("")
    inv = cni.invoke("loopback", "ADD", CONF, container=str(plain))
    assert_error(inv, 4, str(plain))


# -- configuration -------------------------------------------------------------------------------

@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize("stdin", [b"{not json", b"", b"\xff\xfe"])
def test_malformed_json_is_decoding_failure(cni, container_ns, plugin, stdin):
    inv = cni.invoke(plugin, "ADD", stdin, container=container_ns)
    reply = assert_error(inv, 6, "decode")
    assert reply["cniVersion"] == "1.1.0"


@pytest.mark.parametrize("stdin", [b"[]", b"\"text\"", b"42", b"null"])
def test_json_that_is_not_an_object_is_decoding_failure(cni, container_ns, stdin):
    inv = cni.invoke("loopback", "ADD", stdin, container=container_ns)
    assert_error(inv, 6, "JSON object")


@pytest.mark.parametrize("plugin", PLUGINS)
def test_missing_cni_version_is_incompatible_version(cni, container_ns, plugin):
    conf = conf_for(plugin)
    del conf["cniVersion"]
    inv = cni.invoke(plugin, "ADD", conf, container=container_ns)
    assert_error(inv, 1, "missing cniVersion")


@pytest.mark.parametrize("version", ["0.2.0", "0.1.0", "2.0.0", "1.0", "latest"])
def test_unknown_cni_version_is_incompatible_version(cni, container_ns, version):
    inv = cni.invoke("loopback", "ADD", dict(CONF, cniVersion=version), container=container_ns)
    reply = assert_error(inv, 1, repr(version))
    # An error for a version the plugin cannot speak is written in the newest one it can.
    assert reply["cniVersion"] == "1.1.0"


def test_check_is_not_in_0_3_1(cni, container_ns):
    inv = cni.invoke("loopback", "CHECK", dict(CONF, cniVersion="0.3.1"), container=container_ns)
    reply = assert_error(inv, 1, "0.3.1", "CHECK")
    assert reply["cniVersion"] == "0.3.1"


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_and_status_are_not_in_1_0_0(cni, command):
    inv = cni.invoke("loopback", command, CONF, container=None, ifname="", container_id="")
    assert_error(inv, 1, "1.0.0", command)


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_and_status_in_1_1_0_succeed_without_container(cni, command):
    conf = dict(CONF, cniVersion="1.1.0")
    if command == "GC":
        conf["cni.dev/valid-attachments"] = []
    inv = cni.invoke("loopback", command, conf, container=None, ifname="", container_id="")
    assert inv.rc == 0, inv
    assert inv.stdout.strip() == b""


def test_name_that_is_not_a_string_is_invalid_config(cni, container_ns):
    inv = cni.invoke("loopback", "ADD", dict(CONF, name=7), container=container_ns)
    assert_error(inv, 7, "name")


def test_error_reply_speaks_the_configs_version(cni):
    inv = cni.invoke("loopback", "ADD", dict(CONF, cniVersion="0.4.0"), container="/run/netns/pynet-skel-absent")
    reply = assert_error(inv, 3)
    assert reply["cniVersion"] == "0.4.0"


# -- success output ------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_add_prints_one_json_result_in_the_requested_version(cni, container_ns, version):
    inv = cni.invoke("loopback", "ADD", dict(CONF, cniVersion=version), container=container_ns)
    assert inv.rc == 0, inv
    result = json.loads(inv.stdout)
    assert result["cniVersion"] == version
    assert result["interfaces"][0]["name"] == "lo"
    assert container_ns.link("lo")["flags"] & 1


def test_del_and_check_print_nothing(cni, container_ns):
    cni.add("loopback", CONF, container_ns)
    for command in ("CHECK", "DEL"):
        inv = cni.invoke("loopback", command, CONF, container=container_ns)
        assert inv.rc == 0, inv
        assert inv.stdout == b"", (command, inv)


# -- in-process: a plugin bug still reaches the runtime as spec error JSON -------------------------

def test_unexpected_exception_in_plugin_becomes_internal_error(monkeypatch):
    import sys
    import types

    from cni_plugins import skel

    from cni_plugins import registry
    from cni_plugins.plugin import Plugin, no_config

    broken = types.ModuleType("pynet_test_broken_plugin")

    def add(req, conf, handles):
        raise KeyError("boom")

    broken.PLUGIN = Plugin(name="broken", load_config=no_config, add=add, delete=add, check=add)
    monkeypatch.setitem(sys.modules, broken.__name__, broken)
    monkeypatch.setitem(registry.MODULES, "broken", broken.__name__)
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/nowhere"}
    code, reply = skel.handle("broken", env, json.dumps(dict(CONF, cniVersion="0.4.0")).encode())
    assert code != 0
    assert reply["code"] == 999 and reply["cniVersion"] == "0.4.0"
    assert "KeyError" in reply["msg"] and "boom" in reply["details"]
