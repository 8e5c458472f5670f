"""Network namespaces by path or fd for code outside a plugin request (test fixtures, the runner): a
netlink handle bound to one, and the errors that mean "already gone". Plugins get theirs from the
request's handles (cni_plugins/handles.py)."""

from __future__ import annotations

import errno

from .syscalls import entered  # noqa: F401  (the one way in: the syscall layer)


def iproute(fd_or_path=None):
    """An IPRoute handle bound to a netns (or the current one). The caller closes it."""
    from pyroute2.iproute.linux import IPRoute

    if fd_or_path is None:
        return IPRoute()
    with entered(fd_or_path):
        return IPRoute()


def is_missing_error(exc: BaseException) -> bool:
    """Netlink errors that mean "already gone", which DEL treats as success."""
    code = getattr(exc, "code", None)
    if code is None and isinstance(exc, OSError):
        code = exc.errno
    return code in (errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL)


def exists(path: str) -> bool:
    """True when ``path`` is an open-able network namespace."""
    from .syscalls import holds_namespace

    return holds_namespace(path)
