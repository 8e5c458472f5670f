"""Running another plugin (IPAM, or a chained plugin) the way the spec says: found on CNI_PATH, the same
environment with CNI_COMMAND set, the whole network config on stdin."""

from __future__ import annotations

import contextlib
import json
import os

from . import registry, syscalls
from .errors import CNIError, DECODING_FAILURE, INVALID_CONFIG, IO_FAILURE
from .skel import Request
from .results import Result


def find_plugin(name: str, cni_path: tuple[str, ...]) -> str:
    if not name or "/" in name:
        raise CNIError(INVALID_CONFIG, f"invalid plugin type {name!r}")
    for directory in cni_path:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(INVALID_CONFIG, f"failed to find plugin {name!r} in CNI_PATH {list(cni_path)}")


# Set by the daemon: a plugin it executes (not one of ours in-process) must not come back to the daemon,
# whose lock on the container the delegating request holds.
exec_env_overrides: dict[str, str] = {}


def error_from_reply(reply: dict) -> CNIError:
    """The CNIError a plugin's error JSON (code, msg, details) stands for."""
    return CNIError(int(reply.get("code") or 0), str(reply.get("msg", "")), str(reply.get("details", "")))


def exec_plugin(exe: str, env: dict, stdin: bytes, timeout: float | None = None,
                host_netns_fd: int | None = None) -> dict | None:
    """Runs a plugin executable; its decoded JSON reply (None for an empty one). ``host_netns_fd``: the
    network namespace it is started in (a child is born in its creating thread's), else this process's.

    A failing plugin's own error JSON is raised as that CNIError; a failure without one (crash, exit code
    only) or output that is not JSON becomes an I/O or decoding error naming the executable.
    """
    import subprocess  # only here: our own plugins are served in-process, and its import costs ~4 ms

    if exec_env_overrides:
        env = {**env, **exec_env_overrides}
    where = syscalls.entered(host_netns_fd) if host_netns_fd is not None else contextlib.nullcontext()
    try:
        with where:
            proc = subprocess.run([exe], input=stdin, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise CNIError(IO_FAILURE, f"plugin {exe!r} did not finish {env.get('CNI_COMMAND', '')} "
                       f"in {timeout}s") from None
    except OSError as exc:
        raise CNIError(IO_FAILURE, f"failed to run plugin {exe!r}: {exc.strerror}") from None
    out = proc.stdout.strip()
    reply = None
    if out:
        try:
            reply = json.loads(out)
        except ValueError:
            raise CNIError(DECODING_FAILURE, f"plugin {exe!r} printed invalid JSON",
                           out[:500].decode(errors="replace")) from None
    if proc.returncode != 0:
        if isinstance(reply, dict) and "code" in reply:
            raise error_from_reply(reply)
        raise CNIError(IO_FAILURE, f"plugin {exe!r} failed with exit code {proc.returncode}",
                       proc.stderr[-500:].decode(errors="replace").strip())
    return reply


def call(exe: str, env: dict, stdin: bytes, timeout: float | None = None, netns=None) -> dict | None:
    """Runs the plugin executable ``exe`` as the spec says (``env`` holds CNI_COMMAND) and returns its decoded
    reply (None for an empty one); its CNI error is raised as CNIError. This installation's own plugins run
    in this process with the same code, environment and stdin, so the answer is the same minus an
    interpreter start; every other executable is run as a program. ``netns``: the calling request's
    namespaces (skel.NetnsFds) for an in-process plugin; None: this process's own, and CNI_NETNS opened here."""
    name = registry.ours(exe)
    if name is None:
        return exec_plugin(exe, env, stdin, timeout, netns.host if netns is not None else None)
    from .skel import handle

    code, reply = handle(name, env, stdin, netns=netns)
    if code != 0:
        raise error_from_reply(reply)
    return reply


def run(plugin_type: str, command: str, req: Request, handles, stdin: bytes | None = None) -> dict | None:
    """Runs another plugin for ``req`` (same environment, CNI_COMMAND set to ``command``, the whole config
    on stdin unless ``stdin`` is given) in the namespaces of ``handles``; its CNI error is re-raised."""
    env = dict(req.environ)
    env["CNI_COMMAND"] = command
    return call(find_plugin(plugin_type, req.path), env, req.stdin if stdin is None else stdin,
                netns=handles.passed_on())


def ipam_type(req: Request) -> str | None:
    ipam = req.config.get("ipam")
    if not ipam:
        return None
    if not isinstance(ipam, dict) or not isinstance(ipam.get("type"), str) or not ipam["type"]:
        raise CNIError(INVALID_CONFIG, "invalid ipam: expected an object with a 'type'")
    return ipam["type"]


def ipam_add(req: Request, handles) -> Result:
    reply = run(ipam_type(req), "ADD", req, handles)
    if not isinstance(reply, dict):
        raise CNIError(DECODING_FAILURE, "IPAM plugin returned no result")
    return Result.from_dict(reply)


def ipam_del(req: Request, handles) -> None:
    run(ipam_type(req), "DEL", req, handles)


def ipam_verb(req: Request, handles, command: str) -> None:
    """CHECK, STATUS and GC pass through to IPAM unchanged."""
    run(ipam_type(req), command, req, handles)
