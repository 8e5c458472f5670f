"""The one ctypes layer: the namespace, mount and capability system calls Python 3.11 lacks, and the
namespace primitives built on them (entering a network namespace for the length of a block, telling a
namespace's type, pinning one with a bind mount). Plugins, the runner and the launcher all call these;
nothing else calls setns or mount.

Every function raises OSError with the errno and the call named, so a failing step says which one it was.
Nothing here decides policy.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os

from .processes import is_alive, proc_start_time  # noqa: F401 - callers find them here too

_libc = ctypes.CDLL(None, use_errno=True)
_libc_holding_gil = ctypes.PyDLL(None, use_errno=True)   # for clone3: fork() keeps the interpreter lock too

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_INTO_CGROUP = 0x200000000

# /proc/PID/ns/<name> -> clone flag; the order is the one nsenter uses to join (user first).
NAMESPACES = {
    "user": CLONE_NEWUSER, "cgroup": CLONE_NEWCGROUP, "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS,
    "net": CLONE_NEWNET, "pid": CLONE_NEWPID, "mnt": CLONE_NEWNS,
}

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_UNBINDABLE = 1 << 17
MS_SYNCHRONOUS = 16
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _check(ret: int, what: str) -> int:
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _b(value):
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare(0x{flags:x})")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns({nstype:#x})")


def join(fds: dict) -> None:
    """Joins the namespaces given as {name: fd} (names as in NAMESPACES), in NAMESPACES order: the user
    namespace first, as nsenter does, since joining it grants the rights to join the others."""
    for name, flag in NAMESPACES.items():
        if name in fds:
            setns(fds[name], flag)


def mount(source, target, fstype=None, flags: int = 0, data: str | None = None) -> None:
    ret = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    _check(ret, f"mount {fstype or 'bind'} {source} on {target}")


def umount2(target, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _SYS_PIVOT_ROOT[os.uname().machine]
    _check(_libc.syscall(ctypes.c_long(nr), _b(new_root), _b(put_old)), "pivot_root")


def fork_into_cgroup(cgroup_fd: int) -> int:
    """os.fork(), the child born in the cgroup2 directory ``cgroup_fd`` (clone3 with CLONE_INTO_CGROUP):
    unlike a move into it afterwards, no wait for the kernel's threadgroup lock, whose first writer after
    a quiet spell waits an RCU grace period. The interpreter's fork bookkeeping is os.fork's
    (PyOS_BeforeFork, PyOS_AfterFork_Child/_Parent), the call made holding the interpreter lock as
    os.fork makes fork(); the child should be a short-lived stage (glibc's own fork handlers do not run:
    its cached thread id stays the parent's). OSError: ENOSYS before Linux 5.7, EBADF, EINVAL..."""
    args = (ctypes.c_uint64 * 11)(CLONE_INTO_CGROUP, 0, 0, 0, 17, 0, 0, 0, 0, 0, cgroup_fd)   # exit_signal SIGCHLD
    nr = {"x86_64": 435, "aarch64": 435}[os.uname().machine]
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = _libc_holding_gil.syscall(ctypes.c_long(nr), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone3(CLONE_INTO_CGROUP): {os.strerror(err)}")
    return pid


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), f"sethostname {name!r}")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)), f"prctl({option})")


def set_process_name(name: str) -> None:
    """PR_SET_NAME: what ps shows as the command of this process (e.g. the --init PID 1)."""
    _check(_libc.prctl(ctypes.c_int(15), ctypes.c_char_p(name.encode()[:15]), 0, 0, 0), "prctl(PR_SET_NAME)")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(header), data), "capset")


IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_DELETE = 0x200


def inotify_watch(path: str, mask: int) -> int:
    """A non-blocking inotify descriptor reporting ``mask`` events of ``path`` (read it to drain them)."""
    fd = _check(_libc.inotify_init1(ctypes.c_int(os.O_NONBLOCK | os.O_CLOEXEC)), "inotify_init1")
    try:
        _check(_libc.inotify_add_watch(ctypes.c_int(fd), _b(path), ctypes.c_uint32(mask)),
               f"inotify_add_watch {path}")
    except OSError:
        os.close(fd)
        raise
    return fd


def drain(fd: int) -> None:
    """Reads a non-blocking descriptor (an inotify one, a wakeup pipe) until it is empty."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def ns_inode(pid: int | str, name: str) -> int | None:
    """The namespace identity (nsfs inode) of ``name`` for a process, or None when it is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/{name}").st_ino
    except OSError:
        return None


# -- network namespaces -------------------------------------------------------------------------------------
SELF_NETNS = "/proc/thread-self/ns/net"
NS_GET_NSTYPE = 0xB703   # _IO(0xb7, 0x3)


def ns_type(fd: int) -> int | None:
    """The CLONE_NEW* type of a namespace file, or None when ``fd`` is not a namespace at all. The nsfs
    device number cannot tell a network namespace from a mount namespace; this ioctl can."""
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        return None


def same_file(a: int | str, b: int | str) -> bool:
    """Whether ``a`` and ``b`` (each an fd or a path) are one file: for namespace files, one namespace."""
    st_a, st_b = os.stat(a), os.stat(b)
    return (st_a.st_dev, st_a.st_ino) == (st_b.st_dev, st_b.st_ino)


class entered:
    """Runs the body with this thread inside another namespace (a network namespace by default), always
    returning it to where it was. Only for making something that stays bound to that namespace (a
    socket, an open /proc/sys file) or for a child process that inherits it; see cni_plugins/handles.py.
    (A class, not contextlib.contextmanager: contextlib's imports cost pynet-oci's start ~4 ms.)"""

    def __init__(self, fd_or_path, nstype: int = CLONE_NEWNET):
        self.fd_or_path, self.nstype = fd_or_path, nstype

    def __enter__(self) -> None:
        nstype = self.nstype
        own_path = SELF_NETNS if nstype == CLONE_NEWNET else f"/proc/thread-self/ns/{_NAME_OF[nstype]}"
        self.own = None
        path = isinstance(self.fd_or_path, str)
        # Already in that network namespace (a standalone plugin's host handle): no switch and none back.
        # Network namespaces only: entering the current mount namespace again also resets root and cwd.
        # (one fstat and one stat: less than the two switches they save)
        if nstype == CLONE_NEWNET and not path and same_file(self.fd_or_path, own_path):
            return
        self.own = os.open(own_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.target = os.open(self.fd_or_path, os.O_RDONLY | os.O_CLOEXEC) if path else self.fd_or_path
        except BaseException:
            os.close(self.own)
            raise
        try:
            setns(self.target, nstype)
        except BaseException:
            self._close()
            raise

    def __exit__(self, *exc) -> None:
        if self.own is None:
            return
        try:
            setns(self.own, self.nstype)
        finally:
            self._close()

    def _close(self) -> None:
        os.close(self.own)
        if isinstance(self.fd_or_path, str):
            os.close(self.target)


_NAME_OF = {flag: name for name, flag in NAMESPACES.items()}


# -- pins: a namespace kept alive by a bind mount of its file -----------------------------------------------
def pin(source: str, target: str) -> None:
    """Bind-mounts a namespace file so the namespace outlives every process in it."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)
    try:
        mount(source, target, None, MS_BIND)
    except OSError:
        os.unlink(target)
        raise


def unpin(target: str) -> None:
    try:
        umount2(target, MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point (any more)
            raise
    try:
        os.unlink(target)
    except FileNotFoundError:
        pass


def holds_namespace(target: str, nstype: int = CLONE_NEWNET) -> bool:
    """True when ``target`` still holds a namespace of that type (not the empty file under a lost pin)."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return ns_type(fd) == nstype
    finally:
        os.close(fd)


# -- bpf(2): cgroup device programs ---------------------------------------------------------------------------
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2


def _bpf(cmd: int, attr: ctypes.Array, what: str) -> int:
    nr = _SYS_BPF[os.uname().machine]
    return _check(_libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr))), what)


def bpf_prog_load(prog_type: int, insns: bytes, license: str = "GPL", log_size: int = 0) -> int:
    """Loads an eBPF program (``insns``: 8-byte instructions); returns its fd. A verifier rejection
    raises OSError; with ``log_size`` its message carries the verifier's log (the log costs time, so
    callers ask for it only on a retry)."""
    import struct

    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(max(log_size, 1))
    attr = ctypes.create_string_buffer(128)
    # union bpf_attr (BPF_PROG_LOAD): prog_type, insn_cnt, insns, license, log_level, log_size, log_buf
    struct.pack_into("=IIQQIIQ", attr, 0, prog_type, len(insns) // 8, ctypes.addressof(code),
                     ctypes.addressof(lic), 1 if log_size else 0, log_size, ctypes.addressof(log) if log_size else 0)
    try:
        return _bpf(BPF_PROG_LOAD, attr, "bpf(BPF_PROG_LOAD)")
    except OSError as exc:
        text = log.value.decode(errors="replace").strip()
        raise OSError(exc.errno, f"{exc.strerror}{': ' + text if text else ''}") from None


def bpf_prog_attach(prog_fd: int, target_fd: int, attach_type: int, flags: int = 0) -> None:
    """Attaches a loaded program to ``target_fd`` (a cgroup2 directory for cgroup programs)."""
    import struct

    attr = ctypes.create_string_buffer(128)
    # union bpf_attr (BPF_PROG_ATTACH): target_fd, attach_bpf_fd, attach_type, attach_flags
    struct.pack_into("=IIII", attr, 0, target_fd, prog_fd, attach_type, flags)
    _bpf(BPF_PROG_ATTACH, attr, "bpf(BPF_PROG_ATTACH)")


# -- seccomp: installing a filter compiled beforehand ---------------------------------------------------------
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_set_filter(program: bytes) -> None:
    """Installs a classic-BPF seccomp program (``program``: struct sock_filter entries, 8 bytes each, as
    libseccomp's seccomp_export_bpf writes them). Needs no_new_privs or CAP_SYS_ADMIN."""
    code = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(code))
    _check(_libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(prog),
                       ctypes.c_ulong(0), ctypes.c_ulong(0)), "prctl(PR_SET_SECCOMP)")


def make_shared(path: str) -> None:
    """Makes ``path`` a shared mount, bind-mounting it on itself first when it is not a mount point (as
    `ip netns` does for /run/netns): pins mounted under it then propagate to the mount namespaces that
    are its slaves, the ones made after it (`ip netns exec`, containers). Propagation goes from master
    to slave only: a pin made inside such a slave namespace (inside `ip netns exec`) never reaches its
    master and ends with that namespace, whatever is shared."""
    try:
        mount("none", path, None, MS_SHARED | MS_REC)
        return
    except OSError as exc:
        if exc.errno != errno.EINVAL:   # EINVAL: not a mount point
            raise
    mount(path, path, None, MS_BIND | MS_REC)
    mount("none", path, None, MS_SHARED | MS_REC)


def _mountinfo() -> list[tuple[int, int, str, str, str]]:
    """(id, parent id, major:minor, root, mount point) of every mount in this mount namespace."""
    import re   # here: `re` (and `enum`) cost a container start ~3 ms, and only this reads mountinfo

    def unescape(field: str) -> str:   # mountinfo writes space, tab, newline and backslash as \ooo
        return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)

    with open("/proc/self/mountinfo") as f:
        return [(int(p[0]), int(p[1]), p[2], unescape(p[3]), unescape(p[4])) for p in map(str.split, f)]


def release_shared(path: str) -> bool:
    """Undoes make_shared's bind mount of ``path`` on itself: unmounts the topmost mount at ``path`` when it
    is the very directory it covers (same filesystem, same directory), and leaves any other mount there
    (a tmpfs of its own, say) alone. True when it unmounted."""
    path = os.path.realpath(path)
    mounts = _mountinfo()
    here = [m for m in mounts if m[4] == path]
    covered = {m[1] for m in here}
    top = next((m for m in reversed(here) if m[0] not in covered), None)
    parent = next((m for m in mounts if top and m[0] == top[1]), None)
    if top is None or parent is None or parent[2] != top[2]:
        return False
    if top[3] != os.path.normpath(os.path.join(parent[3], os.path.relpath(path, parent[4]))):
        return False
    umount2(path, MNT_DETACH)
    return True


def ns_link_inode(path: str) -> int | None:
    """The namespace inode a /proc/PID/ns/<name> link names (``net:[4026531833]``), or None. readlink
    answers where stat(2) of the same file fails with EACCES (another process's, e.g. PID 1's, here)."""
    try:
        target = os.readlink(path)
    except OSError:
        return None
    _, _, rest = target.partition(":[")
    return int(rest[:-1]) if rest.endswith("]") and rest[:-1].isdigit() else None
