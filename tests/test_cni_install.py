"""`pynet cni install DIR`: executables a runtime can call with a bare environment."""

import json
import os
import stat
import sys

from netns_fixtures import CNI, OUR_PLUGINS

from cni_plugins import registry
from pynet import cli, cni_install

BARE_PATH = "/usr/bin:/bin"
CONF = {"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"}


def test_install_writes_every_plugin_as_an_isolated_script(tmp_path):
    paths = cni_install.install(str(tmp_path / "bin"), shim=False)
    names = sorted(os.path.basename(p) for p in paths)
    assert names == sorted(registry.NAMES)
    for path in paths:
        assert os.stat(path).st_mode & stat.S_IXUSR
        shebang = open(path).readline().split()
        assert os.path.isabs(shebang[0][2:]) and shebang[1:] == ["-IS"]
    assert sorted(os.listdir(tmp_path / "bin")) == names  # no temporary files left behind


def test_install_is_repeatable_over_existing_files(tmp_path):
    first = cni_install.install(str(tmp_path))
    assert cni_install.install(str(tmp_path)) == first


def test_cli_command_installs_and_lists_paths(tmp_path, capsys):
    assert cli.main(["cni", "install", str(tmp_path / "cni")]) == 0
    printed = capsys.readouterr().out.split()
    assert str(tmp_path / "cni" / "loopback") in printed and len(printed) == len(registry.NAMES)


def test_installed_plugins_run_without_venv_or_pythonpath(tmp_path, host_ns, container_ns):
    bindir = str(tmp_path / "opt-cni-bin")
    cni_install.install(bindir)
    runner = CNI(host_ns, bindir)
    env = {"PATH": BARE_PATH, "CNI_COMMAND": "VERSION"}
    inv = runner.invoke("loopback", "VERSION", {"cniVersion": "1.0.0"}, env=env)
    assert inv.rc == 0, inv
    assert "1.1.0" in json.loads(inv.stdout)["supportedVersions"]

    env = {"PATH": BARE_PATH, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "inst1", "CNI_NETNS": container_ns.path,
           "CNI_IFNAME": "eth0", "CNI_PATH": bindir}
    container_ns.ipr.link("set", index=1, state="down")
    inv = runner.invoke("loopback", "ADD", CONF, env=env)
    assert inv.rc == 0, inv
    assert inv.reply["interfaces"][0]["name"] == "lo"
    assert container_ns.link("lo")["flags"] & 1


def test_installed_plugin_ignores_pythonpath_and_venv_variables(tmp_path, host_ns):
    # -I keeps a runtime's stray PYTHONPATH/PYTHONHOME from breaking or hijacking the plugin.
    bindir = str(tmp_path / "bin")
    cni_install.install(bindir)
    env = {"PATH": BARE_PATH, "CNI_COMMAND": "VERSION", "PYTHONPATH": str(tmp_path / "nowhere"),
           "PYTHONHOME": str(tmp_path / "nowhere"), "VIRTUAL_ENV": str(tmp_path / "nowhere")}
    inv = CNI(host_ns, bindir).invoke("bridge", "VERSION", b"", env=env)
    assert inv.rc == 0, inv


def test_scripts_point_at_this_installations_interpreter(tmp_path):
    path = cni_install.install(str(tmp_path), shim=False)[0]
    assert open(path).readline().strip() == f"#!{os.path.abspath(sys.executable)} -IS"
    assert os.path.dirname(os.path.abspath(sys.executable)) == OUR_PLUGINS


# -- the native shim (built by scripts/install.sh when a C compiler is there, as here) ---------------------
def _shim_built() -> bool:
    return os.access(cni_install.shim_path(), os.X_OK)


def test_install_puts_the_native_shim_in_place_when_it_was_built(tmp_path):
    assert _shim_built(), "scripts/install.sh builds the shim with cc"
    paths = cni_install.install(str(tmp_path / "bin"))
    for path in paths:
        assert open(path, "rb").read(4) == b"\x7fELF"
        # What it falls back to without a daemon: the Python script of the same name.
        fallback = os.path.join(cni_install.libexec_dir(), os.path.basename(path))
        assert open(fallback).readline().startswith("#!")


def test_shim_and_python_script_give_the_same_answers(tmp_path, host_ns, make_netns):
    shims = CNI(host_ns, cni_install.install(str(tmp_path / "shim"))[0].rsplit("/", 1)[0],
                extra_env={"PYNET_DAEMON": "off"})
    scripts = CNI(host_ns, cni_install.install(str(tmp_path / "py"), shim=False)[0].rsplit("/", 1)[0],
                  extra_env={"PYNET_DAEMON": "off"})
    assert shims.version("loopback") == scripts.version("loopback")
    a, b = make_netns(), make_netns()
    assert shims.add("loopback", CONF, a)["ips"] == scripts.add("loopback", CONF, b)["ips"]
    for runner in (shims, scripts):
        inv = runner.invoke("loopback", "ADD", b"{not json", container=a)
        assert inv.rc == 1 and inv.reply["code"] == 6


def test_shim_serves_through_the_daemon_and_without_it(tmp_path, host_ns, container_ns, pynet_daemon):
    bindir = os.path.dirname(cni_install.install(str(tmp_path / "bin"))[0])
    via_daemon = CNI(host_ns, bindir, extra_env={"PYNET_SOCKET": pynet_daemon})
    container_ns.ipr.link("set", index=1, state="down")
    assert via_daemon.add("loopback", CONF, container_ns)["interfaces"][0]["name"] == "lo"
    assert container_ns.link("lo")["flags"] & 1
    no_daemon = CNI(host_ns, bindir, extra_env={"PYNET_SOCKET": str(tmp_path / "nobody.sock")})
    no_daemon.delete("loopback", CONF, container_ns)
    assert not container_ns.link("lo")["flags"] & 1


def test_shim_peak_rss_is_small(tmp_path, host_ns):
    bindir = os.path.dirname(cni_install.install(str(tmp_path / "bin"))[0])
    proc = host_ns.run(["/usr/bin/time", "-f", "%M", os.path.join(bindir, "bridge")], input=b"",
                       env={"CNI_COMMAND": "VERSION", "PATH": BARE_PATH})
    assert proc.returncode == 0
    assert int(proc.stderr.split()[-1]) < 4096   # KiB; a Python front door needs several times this


def test_lean_pynet_script_runs_every_command_without_site(tmp_path):
    import subprocess

    path = cni_install.write_script(str(tmp_path / "pynet"))
    with open(path) as f:
        assert f.readline() == f"#!{cni_install.interpreter()} -IS\n"
    assert os.stat(path).st_mode & 0o777 == 0o755
    res = subprocess.run([path, "net", "ls", "--json", "--config-dir", str(tmp_path / "net.d"),
                          "--cache-dir", str(tmp_path / "cache")], env={"PATH": BARE_PATH},
                         capture_output=True, check=False)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []   # every --json is a list of objects
