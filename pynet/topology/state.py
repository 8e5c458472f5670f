"""Where a running topology is written down: names, the state file and the per-topology data dir.

Every namespace of a topology is called ``pynet.<topology>.<run>.<node>``: the topology name keeps two
topologies apart, the random run id keeps two runs of the same file apart (parallel tests), and the
prefix lets ``down`` find leftovers of a crashed ``up`` even without a state file. The state file is
written before each step of ``up``, so it always names at least what exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil

from cni_plugins.files import atomic_write

DEFAULT_STATE_DIR = "/run/pynet/topologies"
NETNS_DIR = "/run/netns"
PREFIX = "pynet"
# A topology's name becomes a file name here and part of every namespace name: nothing that could
# climb out of the state dir ("..", "/") or make two topologies' namespaces share a prefix.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")


def valid_name(name) -> bool:
    return isinstance(name, str) and NAME_RE.match(name) is not None


def default_state_dir() -> str:
    return os.environ.get("PYNET_TOPOLOGY_STATE_DIR") or DEFAULT_STATE_DIR


def netns_name(topology: str, run: str, node: str) -> str:
    return f"{PREFIX}.{topology}.{run}.{node}"


def netns_prefix(topology: str, run: str | None = None) -> str:
    return f"{PREFIX}.{topology}." + (f"{run}." if run else "")


def netns_exists(name: str) -> bool:
    """Whether the named namespace (/run/netns/NAME) still exists."""
    return bool(name) and os.path.exists(os.path.join(NETNS_DIR, name))


def missing_nodes(namespaces: dict) -> list[str]:
    """The nodes of ``namespaces`` ({node: netns name}) whose namespace no longer exists (deleted by hand,
    e.g. `ip netns del`)."""
    return [node for node, ns in namespaces.items() if not netns_exists(ns)]


def existing_netns(prefix: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def _checked(name: str) -> str:
    if not valid_name(name):
        raise ValueError(f"{name!r} is not a topology name (1-24 characters of a-z, 0-9 and '-')")
    return name


class StateStore:
    """``<dir>/<name>.json`` (the state) and ``<dir>/<name>/`` (CNI dataDirs and other files of the run)."""

    def __init__(self, directory: str | None = None):
        self.directory = os.path.abspath(directory or default_state_dir())

    def path(self, name: str) -> str:
        return os.path.join(self.directory, f"{_checked(name)}.json")

    def data_dir(self, name: str) -> str:
        return os.path.join(self.directory, _checked(name))

    def read(self, name: str) -> dict | None:
        try:
            with open(self.path(name)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except ValueError:
            return {"name": name, "corrupt": True}

    def write(self, state: dict) -> None:
        os.makedirs(self.directory, exist_ok=True)
        # Write-then-rename: a crash mid-write leaves the previous state, never half a file.
        atomic_write(self.path(state["name"]), json.dumps(state, indent=1), mode=0o600)

    def remove(self, name: str) -> None:
        shutil.rmtree(self.data_dir(name), ignore_errors=True)
        try:
            os.unlink(self.path(name))
        except FileNotFoundError:
            pass
