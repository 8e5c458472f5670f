"""The cgroup warm-up thread of pynet-oci's create and run (why a warm-up: cgroups.py, "the migration
warm-up"). It imports built-in modules only, so the lean `pynet-oci` script starts it before anything
else: ``os`` alone takes ~1 ms to import here, and each millisecond the first move starts later is one
the container's first cgroup mkdir may wait (the move holds the kernel's cgroup lock for its grace
period). The thread keeps the kernel warm with a move every 2 ms until stop_thread().
"""

import _thread
import posix
import time

# The moves repeat until stop_thread() (at most this long): a grace period after the last move the kernel
# is quiet again, and pynet-oci's imports and checks take longer than that on a loaded machine.
KEEP_WARM = 2.0
KEEP_WARM_EVERY = 0.002

_thread_state = None   # (owner pid, the lock the thread releases when done, its moves done, its stop flag)


def mounts(text: str):
    """(mountpoint, root, fstype, superblock options) of each line of a /proc/<pid>/mountinfo text."""
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) >= 5 and len(rfields) >= 3:
            yield fields[4], fields[3], rfields[0], rfields[2]


def _read(path: str) -> str:
    fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        chunks = []
        while chunk := posix.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        posix.close(fd)
    return b"".join(chunks).decode()


def own_procs_file() -> str | None:
    """cgroup.procs of this process's cgroup: in the cgroup2 tree when one is mounted (a move there has
    no controller to migrate), else in the first v1 hierarchy."""
    own = {}
    for line in _read("/proc/self/cgroup").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            own[parts[1]] = parts[2]
    found = {}
    for mnt, root, fstype, opts in mounts(_read("/proc/self/mountinfo")):
        if root != "/":
            continue
        if fstype == "cgroup2" and "" in own:
            found.setdefault(2, (mnt, own[""]))
        elif fstype == "cgroup":
            have = set(opts.split(","))
            for key, rel in own.items():
                if key and set(key.split(",")) <= have:
                    found.setdefault(1, (mnt, rel))
    for version in (2, 1):
        if version in found:
            mnt, rel = found[version]
            return "/".join(p for p in (mnt.rstrip("/"), rel.strip("/"), "cgroup.procs") if p)
    return None


def start_thread() -> None:
    """Starts the warm-up thread (best effort: any failure only forgoes the saving); once per process.
    Its file is found and opened here: looked up by the thread, each step waited for the interpreter lock
    held by the caller's imports, and the first move began up to 5 ms late."""
    global _thread_state
    if _thread_state is not None and _thread_state[0] == posix.getpid():
        return
    try:
        procs = own_procs_file()
        fd = posix.open(procs, posix.O_WRONLY | posix.O_CLOEXEC) if procs else None
    except (OSError, ValueError):
        return
    if fd is None:
        return
    done, moved, stop = _thread.allocate_lock(), [], []
    done.acquire()

    def keep_warm() -> None:
        try:
            deadline = time.monotonic() + KEEP_WARM
            while True:
                posix.write(fd, b"0")   # "0": this process, into the cgroup it is in (nothing changes)
                moved.append(True)
                if stop or time.monotonic() > deadline:
                    break
                time.sleep(KEEP_WARM_EVERY)
        except BaseException:  # noqa: BLE001 - best effort
            pass
        finally:
            posix.close(fd)
            done.release()

    try:
        _thread.start_new_thread(keep_warm, ())
    except RuntimeError:
        posix.close(fd)
        return
    _thread_state = (posix.getpid(), done, moved, stop)


def stop_thread() -> None:
    """Stops this process's warm-up thread; returns once the kernel is warm: right away when a move is
    done (it stays warm until a grace period after the last; the thread ends after its current sleep),
    else when the first move is (it holds the cgroup lock until then: a move of ours follows within
    its grace period)."""
    global _thread_state
    state, _thread_state = _thread_state, None
    if state is None or state[0] != posix.getpid():
        return
    _owner, done, moved, stop = state
    stop.append(True)
    if not moved:
        done.acquire()
