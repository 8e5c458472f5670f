"""`pynet run` options a Docker user types: --entrypoint, -w, --add-host, -i, -t/-it (a pty of the
container's own, driven here through a pty pair whose slave is pynet's controlling terminal, as a shell
starts it), --restart for detached containers, and `pynet exec -it`. Each asserted from inside the
container or from its record."""

from __future__ import annotations

import fcntl
import json
import os
import select
import struct
import termios
import time

import pytest

from netns_fixtures.multinode import wait_for
from pynet.launcher import options
from pynet.launcher.container import _resolve_command
from tests.test_launcher import PYNET, pynet, pynet_root  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the launcher needs root")


def _record(pynet, ref: str) -> dict:
    return next(r for r in pynet.records() if r["id"] == ref or r.get("name") == ref)


# -- --entrypoint, -w, --add-host ------------------------------------------------------------------------
@pytest.mark.parametrize("entrypoint, command, argv", [
    (None, [], ["/bin/app", "--default"]),
    (None, ["--flag"], ["/bin/app", "--flag"]),
    ("/bin/other", [], ["/bin/other"]),               # the image's Cmd goes with its Entrypoint
    ("/bin/other", ["x"], ["/bin/other", "x"]),
    ("", [], ["--default"]),                           # '' clears the Entrypoint only
    ("", ["sh", "-c", "true"], ["sh", "-c", "true"]),
])
def test_entrypoint_follows_dockers_rule(entrypoint, command, argv):
    opts = options.RunOptions(image="img", command=command, entrypoint=entrypoint)
    assert _resolve_command(opts, {"Entrypoint": ["/bin/app"], "Cmd": ["--default"]}) == argv


def test_entrypoint_workdir_and_added_hosts_reach_the_container(pynet):
    res = pynet.run("--rm", "--entrypoint", "echo", "busybox", "hello", "there")
    assert (res.returncode, res.out) == (0, "hello there\n"), res.err
    res = pynet.run("--rm", "--entrypoint", "", "busybox", "sh", "-c", "echo cleared")
    assert (res.returncode, res.out) == (0, "cleared\n"), res.err
    res = pynet.run("--rm", "-w", "/srv/data", "--add-host", "db.internal:10.1.2.3", "--add-host", "v6:fd00::7",
                    "busybox", "sh", "-c", "pwd; grep -v localhost /etc/hosts")
    assert res.returncode == 0, res.err
    lines = res.out.splitlines()
    assert lines[0] == "/srv/data"
    assert "10.1.2.3\tdb.internal" in lines and "fd00::7\tv6" in lines


@pytest.mark.parametrize("argv, named", [
    (["--add-host", "db"], "'db'"),
    (["--add-host", "db:10.1.2"], "'10.1.2'"),
    (["--add-host", "bad name:10.1.2.3"], "'bad name:10.1.2.3'"),
    (["-w", "relative/dir"], "'relative/dir'"),
    (["-d", "--restart", "sometimes"], "'sometimes'"),
    (["-d", "--restart", "on-failure:x"], "'on-failure:x'"),
    (["-d", "--restart", "always:3"], "'always:3'"),
    (["--restart", "always"], "needs -d"),
    (["-d", "--rm", "--restart", "always"], "conflict"),
])
def test_bad_run_options_are_refused_naming_the_value(pynet, argv, named):
    res = pynet.run(*argv, "busybox", "true")
    assert res.returncode == 125 and named in res.err, res.err
    assert "Traceback" not in res.err
    assert pynet.records() == []


# -- -i --------------------------------------------------------------------------------------------
def test_stdin_reaches_the_container_only_with_i(pynet):
    res = pynet("run", "--rm", "-i", "--net", "none", "busybox", "cat", input=b"piped\n")
    assert (res.returncode, res.out) == (0, "piped\n"), res.err
    res = pynet("run", "--rm", "--net", "none", "busybox", "cat", input=b"piped\n")
    assert (res.returncode, res.out) == (0, ""), res.err


# -- -t / -it ----------------------------------------------------------------------------------------
def test_t_gives_the_container_a_terminal_of_its_own(pynet):
    res = pynet.run("--rm", "-t", "busybox", "sh", "-c", "tty; [ -t 0 ] && [ -t 1 ] && echo both-tty")
    assert res.returncode == 0, res.err
    assert res.out.replace("\r\n", "\n") == "/dev/pts/0\nboth-tty\n"


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """A pty whose slave is the controlling terminal of the `pynet` it runs (as a shell would start it)."""

    def __init__(self, pynet, argv, rows=33, cols=101):
        self.master, slave = os.openpty()
        _set_size(slave, rows, cols)

        def controlling_tty():
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = pynet.host_ns.popen([PYNET, *argv], env=pynet.env, stdin=slave, stdout=slave, stderr=slave,
                                        start_new_session=True, preexec_fn=controlling_tty)
        os.close(slave)
        self.seen = b""

    def readwait_for(self, needle: bytes, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                raise AssertionError(f"no {needle!r} in {self.seen!r}")
            try:
                self.seen += os.read(self.master, 4096)
            except OSError:
                raise AssertionError(f"terminal closed before {needle!r}: {self.seen!r}") from None
        return self.seen

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.close(self.master)


def test_it_is_a_raw_terminal_with_resize_and_ctrl_c_and_the_exit_code(pynet):
    term = Terminal(pynet, ["run", "--rm", "-it", "--net", "none", "busybox", "sh", "-c",
                            "tty; stty size; echo ready; read line; echo got-$line; stty size; "
                            "echo sleeping; sleep 60; exit $?"])
    try:
        term.readwait_for(b"ready")
        assert b"/dev/pts/0" in term.seen and b"33 101" in term.seen
        _set_size(term.master, 40, 120)    # SIGWINCH to pynet, which resizes the container's terminal
        term.write(b"hello\r")
        term.readwait_for(b"sleeping")
        assert b"got-hello" in term.seen and b"40 120" in term.seen
        term.write(b"\x03")                # raw: a byte for the container's terminal, SIGINT to its sleep
    finally:
        code = term.close()
    assert code == 130, term.seen


def test_ctrl_c_reaches_the_command_behind_init(pynet):
    term = Terminal(pynet, ["run", "--rm", "-it", "--init", "--net", "none", "busybox", "sh", "-c",
                            "echo TERM=$TERM; exec sleep 60"])
    try:
        term.readwait_for(b"TERM=xterm")
        time.sleep(0.2)   # the exec of sleep
        term.write(b"\x03")
    finally:
        code = term.close()
    assert code == 130, term.seen


def test_exec_it_runs_on_a_terminal_of_its_own(pynet):
    cid = pynet.detach("busybox", "sleep", "120")
    res = pynet("exec", "-t", cid, "sh", "-c", "tty; [ -t 1 ] && echo is-tty")
    assert res.returncode == 0, res.err
    assert res.out.replace("\r\n", "\n").splitlines()[-1] == "is-tty"
    assert res.out.startswith("/dev/pts/")
    term = Terminal(pynet, ["exec", "-it", cid, "sh", "-c", "stty size; read line; echo got-$line; exit 3"], 20, 70)
    try:
        term.readwait_for(b"20 70")
        term.write(b"typed\r")
        term.readwait_for(b"got-typed")
    finally:
        code = term.close()
    assert code == 3, term.seen


def test_detached_t_keeps_the_terminal_output_in_the_log(pynet):
    cid = pynet.detach("-t", "busybox", "sh", "-c", "tty; echo done")
    wait_for(lambda: _record(pynet, cid).get("status") == "exited", what="exit")
    res = pynet("logs", cid)
    assert res.out.replace("\r\n", "\n") == "/dev/pts/0\ndone\n", res.err


# -- --restart ---------------------------------------------------------------------------------------
def test_on_failure_restarts_up_to_its_limit_and_counts(pynet):
    cid = pynet.detach("--restart", "on-failure:2", "busybox", "sh", "-c", "echo run; exit 3")
    rec = wait_for(lambda: (r := _record(pynet, cid)).get("status") == "exited" and r, what="the last exit")
    assert (rec["restart_count"], rec["exit_code"]) == (2, 3)
    assert rec["restart_policy"] == {"name": "on-failure", "maximum_retry_count": 2}
    assert pynet("logs", cid).out == "run\nrun\nrun\n"
    [row] = json.loads(pynet("ps", "-a", "--json").out)
    assert (row["restart_count"], row["restart_policy"]) == (2, "on-failure")
    assert pynet.inspect(cid)["restart_count"] == 2


def test_on_failure_does_not_restart_a_clean_exit(pynet):
    cid = pynet.detach("--restart", "on-failure", "busybox", "true")
    rec = wait_for(lambda: (r := _record(pynet, cid)).get("status") == "exited" and r, what="the exit")
    assert (rec["restart_count"], rec["exit_code"]) == (0, 0)


def test_always_restarts_until_stop_and_rm_f_ends_it_too(pynet):
    cid = pynet.detach("--restart", "always", "busybox", "sh", "-c", "sleep 0.3")
    wait_for(lambda: _record(pynet, cid).get("restart_count", 0) >= 2, what="two restarts")
    assert "restarted" in pynet("ps", "--format", "{{.Status}}").out
    assert pynet("stop", "-t", "1", cid).returncode == 0
    rec = _record(pynet, cid)
    assert rec["status"] == "exited"
    count = rec["restart_count"]
    time.sleep(1)
    assert _record(pynet, cid)["restart_count"] == count and pynet("ps", "-q").out == ""
    assert pynet("rm", cid).returncode == 0

    cid = pynet.detach("--restart", "always", "busybox", "sh", "-c", "exit 1")
    wait_for(lambda: _record(pynet, cid).get("restart_count", 0) >= 1, what="a restart")
    res = pynet("rm", cid)
    assert res.returncode != 0 and ("restarting" in res.err or "running" in res.err), res.err
    assert pynet("rm", "-f", cid).returncode == 0
    assert pynet.records() == []


def test_restart_attaches_the_network_again(pynet, tmp_path):
    for key, sub in (("PYNET_CONFIG_DIR", "net.d"), ("PYNET_CACHE_DIR", "cache"), ("PYNET_NETNS_DIR", "netns")):
        os.makedirs(tmp_path / sub, exist_ok=True)
        pynet.env[key] = str(tmp_path / sub)
    res = pynet("run", "-d", "--restart", "on-failure:1", "busybox", "sh", "-c",
                "grep -q eth0 /proc/net/dev && echo has-eth0; exit 4")
    assert res.returncode == 0, res.err
    cid = res.out.strip()
    rec = wait_for(lambda: (r := _record(pynet, cid)).get("status") == "exited" and r, what="the last exit")
    assert rec["restart_count"] == 1
    assert pynet("logs", cid).out == "has-eth0\nhas-eth0\n"
    assert pynet("rm", cid).returncode == 0
    assert json.loads(pynet("ls", "--json").out) == []   # no attachment left by either run
