"""The stage protocol between a launcher and the processes it forks to build a container (pynet run's
launcher and pynet-oci's runtime alike, pynet/oci/init.py): a stage runs in a forked child and reports
one JSON line on its report pipe (an error becomes one, with the exit code the launcher should give);
the launcher sends single bytes on the sync pipe to let it go on."""

from __future__ import annotations

import _socket   # the C module: `socket` would add ~1.5 ms to every start for one ioctl
import fcntl
import _signal as signal   # not `signal`: its enums cost ~2 ms at import; same constants
import os
import struct

from pynet.oci import jsonc as json   # not `json`: it imports `re` and `enum` (~4 ms of a start)


class LaunchError(Exception):
    def __init__(self, message: str, exit_code: int = 125):
        super().__init__(message)
        self.exit_code = exit_code



def kill_stages(*pids) -> None:
    """SIGKILL to each stage process still there (None/0 skipped), reaped when it is our child."""
    for p in pids:
        if p:
            try:
                os.kill(p, signal.SIGKILL)
                os.waitpid(p, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def fork_stage(fn, *args, fork=os.fork) -> tuple[int, int, int]:
    """Forks (with ``fork``) a child running ``fn(*args, sync_fd, report_fd)`` as a stage (_run_stage);
    returns its pid, the read end of its report pipe and the write end of its sync pipe."""
    r_report, w_report = os.pipe()
    r_sync, w_sync = os.pipe()
    pid = fork()
    if pid == 0:
        os.close(r_report)
        os.close(w_sync)
        _run_stage(fn, *args, r_sync, w_report)
    os.close(w_report)
    os.close(r_sync)
    return pid, r_report, w_sync


def _read(report) -> dict:
    line = report.readline()
    return json.loads(line) if line else {}


def _fail(msg: dict):
    if not msg:
        raise LaunchError("container setup ended without a report")
    raise LaunchError(msg.get("error", "container setup failed"), msg.get("code", 125))


# -- child side ------------------------------------------------------------------------------------
def _run_stage(fn, *args):
    """Runs a stage in a forked child; never returns. Failures become one JSON line for the launcher."""
    report_fd = args[-1]
    code = 125
    try:
        fn(*args)
        code = 0
    except FileNotFoundError as exc:
        code = 127 if getattr(exc, "pynet_exec", False) else 125
        _report(report_fd, {"error": str(exc), "code": code})
    except PermissionError as exc:
        code = 126 if getattr(exc, "pynet_exec", False) else 125
        _report(report_fd, {"error": str(exc), "code": code})
    except BaseException as exc:  # noqa: BLE001 - anything goes back to the launcher as text
        _report(report_fd, {"error": f"{type(exc).__name__}: {exc}", "code": code})
    finally:
        os._exit(code)


def _report(fd: int, msg: dict) -> None:
    try:
        os.write(fd, json.dumps(msg).encode() + b"\n")
    except OSError:
        pass


def _wait_byte(fd: int, expected: bytes) -> None:
    got = os.read(fd, 1)
    if got != expected:
        os._exit(125)   # the launcher went away: nothing to report to


def _loopback_up() -> None:
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, ifr))[1]   # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))    # SIOCSIFFLAGS, IFF_UP
    finally:
        s.close()


def execvpe(argv: list, env: dict) -> None:
    """execve of ``argv`` looked up in env's PATH; a failure raised with ``pynet_exec`` set (126/127)."""
    try:
        _execvpe(argv[0], argv, env)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            err = FileNotFoundError(f"{argv[0]}: executable file not found in $PATH")
        elif isinstance(exc, PermissionError):
            err = PermissionError(f"{argv[0]}: permission denied")
        else:
            err = OSError(f"exec {argv[0]}: {exc.strerror}")
        err.pynet_exec = True
        raise err from None


def _execvpe(file: str, argv: list, env: dict) -> None:
    """os.execvpe's search (the first error other than a missing file wins), without the `warnings`
    module os.get_exec_path imports when called (after pivot_root: out of reach, so imported by every
    start)."""
    if os.path.dirname(file):
        os.execve(file, argv, env)
    path = env.get("PATH")
    saved = last = None
    for directory in (os.defpath if path is None else path).split(os.pathsep):
        try:
            os.execve(os.path.join(directory, file), argv, env)
        except (FileNotFoundError, NotADirectoryError) as exc:
            last = exc
        except OSError as exc:
            last = exc
            saved = saved or exc
    raise saved or last


def exit_status(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
