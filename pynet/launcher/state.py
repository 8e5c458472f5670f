"""Where containers live on disk.

- run state (lost at reboot, like runc's): ``$PYNET_STATE`` or /run/pynet, one directory per container
  holding state.json, the log, and the per-container /etc/hostname, /etc/hosts, /etc/resolv.conf.
- storage: ``$PYNET_ROOT`` or /var/lib/pynet: images/, layers/, containers/<id>/{upper,work}.

state.json is rewritten atomically (write + rename), so a reader never sees half a record and a crashed
launcher leaves a record that ``pynet rm -f`` / ``pynet container gc`` can act on.
"""

from __future__ import annotations

import json
import os
import time

from cni_plugins.files import atomic_write

from cni_plugins import syscalls


def run_root() -> str:
    return os.environ.get("PYNET_STATE") or "/run/pynet"


def storage_root() -> str:
    return os.environ.get("PYNET_ROOT") or "/var/lib/pynet"


def containers_dir() -> str:
    return os.path.join(run_root(), "containers")


def storage_dir(cid: str = "") -> str:
    """A container's storage (upper and work dirs), or with no id the directory holding them all."""
    return os.path.join(storage_root(), "containers", cid)


def new_id() -> str:
    return os.urandom(32).hex()


def write_json(path: str, data) -> None:
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True))


class LookupFailed(LookupError):
    pass


class Record:
    """One container's state.json, plus helpers to answer "is it still running"."""

    def __init__(self, data: dict):
        self.data = data

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def dir(self) -> str:
        return os.path.join(containers_dir(), self.id)

    @property
    def path(self) -> str:
        return os.path.join(self.dir, "state.json")

    def __getitem__(self, key):
        return self.data[key]

    def get(self, key, default=None):
        return self.data.get(key, default)

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)

    @classmethod
    def create(cls, data: dict) -> "Record":
        os.makedirs(containers_dir(), mode=0o711, exist_ok=True)
        rec = cls(data)
        os.mkdir(rec.dir, 0o711)
        rec.save()
        return rec

    @classmethod
    def load(cls, cid: str) -> "Record":
        with open(os.path.join(containers_dir(), cid, "state.json")) as fh:
            return cls(json.load(fh))

    def reload(self) -> "Record":
        try:
            return Record.load(self.id)
        except FileNotFoundError:
            return self

    def running(self) -> bool:
        return syscalls.is_alive(self.get("pid"), self.get("pid_start"))

    def monitor_alive(self) -> bool:
        return syscalls.is_alive(self.get("monitor_pid"), self.get("monitor_start"))

    def status(self) -> str:
        """created/running/restarting/exited, with "dead" for a record whose launcher vanished mid-flight."""
        if self.running():
            return "running"
        status = self.get("status", "created")
        if status in ("running", "created", "stopping", "restarting") and not self.monitor_alive():
            return "dead"
        return status

    def file(self, name: str) -> str:
        return os.path.join(self.dir, name)


# A container directory being deleted is first renamed to this prefix (a hidden sibling), so it leaves
# every listing at once and the deletion itself can wait (see container.cleanup).
REMOVING_PREFIX = ".removing-"


def set_aside(path: str) -> str | None:
    """Renames ``path`` to a hidden sibling for deletion; that new path, or None if there was nothing."""
    parent, name = os.path.split(path)
    target = os.path.join(parent, REMOVING_PREFIX + name)
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    return target


def set_aside_leftovers() -> list[str]:
    """Every directory set aside for deletion: those a launcher died before deleting, and any a live one
    is deleting right now (deleting a tree twice at once is harmless)."""
    out = []
    for parent in (containers_dir(), storage_dir()):
        try:
            out += [os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(REMOVING_PREFIX)]
        except FileNotFoundError:
            pass
    return out


def all_records() -> list[Record]:
    out = []
    try:
        names = os.listdir(containers_dir())
    except FileNotFoundError:
        return []
    for name in names:
        if name.startswith("."):
            continue
        try:
            out.append(Record.load(name))
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            continue
    out.sort(key=lambda r: r.get("created", 0))
    return out


def find(ref: str) -> Record:
    """By name, full id or unique id prefix."""
    records = all_records()
    for rec in records:
        if rec.get("name") == ref or rec.id == ref:
            return rec
    matches = [r for r in records if r.id.startswith(ref)] if len(ref) >= 3 else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LookupFailed(f"no such container: {ref}")
    raise LookupFailed(f"container reference {ref!r} is ambiguous")


def name_taken(name: str) -> bool:
    return any(r.get("name") == name for r in all_records())


def now() -> float:
    return time.time()
