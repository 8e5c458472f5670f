"""The handles one request works with, opened once by the skeleton, passed to the plugin, closed in one place.

A plugin acts in two network namespaces: the "host" one it was called in, and the container's
(``CNI_NETNS``). Each is held here by a file descriptor, and every kernel handle of a namespace is bound to
that fd when it is made — a netlink socket, a libnftables context, an open /proc/sys file all stay in the
namespace they were created in — so nothing depends on which namespace the calling thread is in. The
standalone plugin process gets its own namespace as host; the daemon gets the client's, as an fd
(netavark's DriverInfo: one bundle of handles per request).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from . import syscalls
from .errors import CNIError, INVALID_ENVIRONMENT, UNKNOWN_CONTAINER

# O_NONBLOCK: a FIFO given as CNI_NETNS must fail the type check, not hang the open.
OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


class NetnsHandle:
    """One network namespace, held by ``fd``, with its netlink handle (``ipr``), its nftables handle
    (``nft``) and its /proc files (``open_proc``, ``sysctl_read``/``sysctl_write``), each made on first use."""

    def __init__(self, fd: int, path: str = "", owns_fd: bool = True):
        self.fd = fd
        self.path = path
        self._owns_fd = owns_fd
        self._ipr = None
        self._nft = None

    def make(self, factory, *args, **kwargs):
        """``factory(*args, **kwargs)`` called inside this namespace: for objects whose sockets stay bound
        to the namespace they were created in (a pyroute2 socket, a libnftables context)."""
        with syscalls.entered(self.fd):
            return factory(*args, **kwargs)

    @property
    def ipr(self):
        """A pyroute2 IPRoute whose socket was created inside this namespace."""
        if self._ipr is None:
            from pyroute2.iproute.linux import IPRoute

            self._ipr = self.make(IPRoute)
        return self._ipr

    @property
    def nft(self):
        if self._nft is None:
            from .nft import Nft

            self._nft = Nft(netns_fd=self.fd)
        return self._nft

    def open_proc(self, path: str, mode: str = "r"):
        """A /proc file as seen from inside this namespace (``/proc/sys/net/...``, ``/proc/thread-self/net/...``);
        the open file keeps referring to this namespace."""
        return self.make(open, path, mode)

    def sysctl_read(self, key: str) -> str:
        from . import sysctl

        return sysctl.read(key, self)

    def sysctl_write(self, key: str, value) -> None:
        from . import sysctl

        sysctl.write(key, value, self)

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        self._nft = None
        if self._owns_fd and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Kept for readers of plugin code: the container side is a NetnsHandle too.
ContainerNetns = NetnsHandle


def own_netns() -> NetnsHandle:
    """The calling thread's network namespace (a standalone plugin's host)."""
    return NetnsHandle(os.open(syscalls.SELF_NETNS, os.O_RDONLY | os.O_CLOEXEC), syscalls.SELF_NETNS)


@dataclass(frozen=True)
class NetnsFds:
    """The namespaces a daemon client passed: its own (the host) and what opening CNI_NETNS gave it, an fd
    or an errno (neither: there was no path). The daemon owns and closes these fds, not the request."""
    host: int
    container: int | None = None
    container_errno: int | None = None


class Handles:
    """The bundle a plugin verb gets: ``host`` and the container namespace.

    The container side is opened on first use, so plugins that never enter the container (IPAM, portmap)
    never touch ``CNI_NETNS``: ``container()`` for ADD and CHECK (a missing namespace is code 3, a file
    that is not a network namespace code 4), ``container_if_present()`` for DEL (None when it is gone).

    Where the container namespace comes from: a path opened here (standalone), or what a thin client
    opened in its own mount namespace and passed as an fd, or the errno of its failed open (the daemon):
    the path may exist only in the client's mount namespace, so the daemon never resolves it itself.
    """

    def __init__(self, host: NetnsHandle, container_path: str, container_fd: int | None = None,
                 container_errno: int | None = None, owns_container_fd: bool = True):
        self.host = host
        self.container_path = container_path
        self._given_fd = container_fd
        self._given_errno = container_errno
        self._owns_given = owns_container_fd
        self._container: NetnsHandle | None = None
        self._failure: CNIError | None = None
        self._gone = False

    def container(self) -> NetnsHandle:
        handle = self._open_container(for_delete=False)
        assert handle is not None
        return handle

    def container_if_present(self) -> NetnsHandle | None:
        return self._open_container(for_delete=True)

    def _open_container(self, for_delete: bool) -> NetnsHandle | None:
        if self._container is None and self._failure is None and not self._gone:
            self._classify()
        if self._failure is not None:
            if for_delete and self._failure.code == UNKNOWN_CONTAINER:
                return None
            raise self._failure
        if self._gone:
            if for_delete:
                return None
            raise CNIError(INVALID_ENVIRONMENT, f"CNI_NETNS {self.container_path!r} is not a network namespace")
        return self._container

    def _classify(self) -> None:
        path = self.container_path
        fd, err = self._given_fd, self._given_errno
        owns = self._owns_given
        self._given_fd = None
        if fd is None and err is None:
            if not path:
                self._failure = CNIError(UNKNOWN_CONTAINER, "no network namespace given (CNI_NETNS is empty)")
                return
            try:
                fd, owns = os.open(path, OPEN_FLAGS), True
            except OSError as exc:
                err = exc.errno
        if fd is None:
            if err == 2:   # ENOENT
                self._failure = CNIError(UNKNOWN_CONTAINER, f"network namespace {path!r} does not exist")
            else:
                self._failure = CNIError(UNKNOWN_CONTAINER, f"cannot open network namespace {path!r}: "
                                         f"{os.strerror(err)}")
            return
        kind = syscalls.ns_type(fd)
        if kind != syscalls.CLONE_NEWNET:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
            if owns:
                os.close(fd)
            if regular and kind is None:
                # What a runtime leaves when it unmounts a netns without removing its mount point: the
                # namespace is gone; DEL has nothing to do in there, ADD and CHECK fail.
                self._gone = True
                return
            what = "a namespace of another type" if kind is not None else "not a namespace file"
            self._failure = CNIError(INVALID_ENVIRONMENT, f"CNI_NETNS {path!r} is not a network namespace ({what})")
            return
        if syscalls.same_file(fd, self.host.fd):
            if owns:
                os.close(fd)
            self._failure = CNIError(INVALID_ENVIRONMENT, f"CNI_NETNS {path!r} is the plugin's own network namespace")
            return
        self._container = NetnsHandle(fd, path, owns_fd=owns)

    def passed_on(self):
        """The same namespaces for a plugin this one runs in-process (IPAM, a chained step): the fds as this
        request holds them, so the inner request sees exactly what the outer one saw."""
        if self._container is not None:
            return NetnsFds(self.host.fd, self._container.fd)
        if self._given_fd is not None or self._given_errno is not None:
            return NetnsFds(self.host.fd, self._given_fd, self._given_errno)
        return NetnsFds(self.host.fd)

    def close(self) -> None:
        """Closes every handle of the request (the one place they are closed)."""
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._given_fd is not None and self._owns_given:
            os.close(self._given_fd)
        self._given_fd = None
        self.host.close()
