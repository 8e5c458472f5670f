"""OCI hooks: each hook's executable run with its args and env, the container's state JSON on stdin,
in config order; a hook that fails (exit status, timeout) stops the operation (poststart, poststop: only
warned)."""

from __future__ import annotations

from . import jsonc as json
from .errors import OCIError


def run(conf: dict, kind: str, state: dict, warn: bool = False) -> list[str]:
    """Runs the ``kind`` hooks; the first failure raises OCIError, or with ``warn`` (poststart, poststop:
    the spec's "log a warning and continue") every failure is returned as a message. ``state`` may be a
    function giving it: the container's status is read only when there are hooks to tell."""
    if not (conf.get("hooks") or {}).get(kind):
        return []
    data = json.dumps(state() if callable(state) else state).encode()
    warnings = []
    for n, hook in enumerate((conf.get("hooks") or {}).get(kind) or ()):
        try:
            _run_one(kind, n, hook, data)
        except OCIError as exc:
            if not warn:
                raise
            warnings.append(str(exc))
    return warnings


def preload(conf: dict) -> None:
    """Imports what running hooks takes (~3 ms) only when there are any; before the container's init is
    forked, which runs some after pivot_root, when the host's modules are out of reach."""
    if any((conf.get("hooks") or {}).values()):
        import subprocess  # noqa: F401


def _run_one(kind: str, n: int, hook: dict, data: bytes) -> None:
    import subprocess

    argv = hook.get("args") or [hook["path"]]
    try:
        res = subprocess.run(argv, executable=hook["path"], input=data, env=_env(hook),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=hook.get("timeout"),
                             close_fds=True)
    except subprocess.TimeoutExpired:
        raise OCIError(f"{kind} hook #{n} ({hook['path']}) did not finish in {hook['timeout']} s") from None
    except OSError as exc:
        raise OCIError(f"{kind} hook #{n} ({hook['path']}): {exc.strerror}") from None
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip()
        raise OCIError(f"{kind} hook #{n} ({hook['path']}) failed with exit status {res.returncode}"
                       + (f": {err}" if err else ""))


def _env(hook: dict) -> dict:
    env = {}
    for item in hook.get("env") or ():
        key, _, value = item.partition("=")
        env[key] = value
    return env
