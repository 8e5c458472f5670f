"""A warm attachment: the daemon's spare launcher (zygote.py) runs, while nobody waits, the part of the default
network's chain that no request changes (the bridge plugin and its host-local lease: ~20 ms of a run's
~28 ms network ADD), for a network namespace of its own, as the container it reserved (its id, ifname
eth0). The spare moves its reserved PID 1 into that namespace as soon as it exists
(namespaces.Prestarted.enter_netns). A run that uses that network the plain way (no --ip, same ifname and
runner locations) finds its PID 1 there and finishes the chain from the cached result (portmap with its
-p mappings, dnsname with its name: Attachments.adopt), which leaves the cache record a whole ADD leaves;
any other run gets a new empty network namespace for its PID 1 (Prestarted.launch), and the spare DELs
the warm attachment after the run's reply (discard), as it does when it is released unused.

Until a run adopts it the attachment is owned by the spare's own process (attachments.Container pid), so
a spare killed with SIGKILL leaves a dead container that `pynet attach gc` (and the CNI GC) frees, lease
included.
"""

from __future__ import annotations

import os

from cni_plugins import syscalls

from .network import DEFAULT_NETWORK, on_default_network

IFNAME = "eth0"
# Plugins whose ADD reads nothing a run gives beyond the container id, netns and ifname, provided the run
# gives no capability they take (a run with --ip never uses a warm attachment).
REQUEST_INDEPENDENT = frozenset({"bridge", "ptp", "macvlan", "firewall", "tuning"})
RUN_CAPABILITIES = frozenset({"ips", "mac"})   # those a fitting run never gives


class WarmAttachment:
    """What finish() gives: the cache entry of the part (its result so far), how many plugins it ran,
    the runner locations it ran with, and an fd of its network namespace (also pinned)."""

    def __init__(self, entry, steps: int, runner_locations: dict, netns_fd: int):
        self.entry, self.steps, self.runner, self.netns_fd = entry, steps, runner_locations, netns_fd
        self.taken = False   # adopted by a run (its container's DEL undoes it), or discarded
        self.conf = None     # the network as fits() found it on disk (the run's attach uses it)


def request_independent_steps(conf) -> int:
    """How many plugins from the start of the chain need nothing from a run."""
    steps = 0
    for plugin in conf.plugins:
        declared = plugin.get("capabilities")
        caps = {k for k, v in declared.items() if v} if isinstance(declared, dict) else set()
        if plugin.get("type") not in REQUEST_INDEPENDENT or not caps <= RUN_CAPABILITIES:
            break
        steps += 1
    return steps


def _new_netns() -> int:
    """An fd of a new network namespace; this process stays in its own (the plugins' host side)."""
    own = os.open(syscalls.SELF_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.unshare(syscalls.CLONE_NEWNET)
        try:
            return os.open(syscalls.SELF_NETNS, os.O_RDONLY | os.O_CLOEXEC)
        finally:
            syscalls.setns(own, syscalls.CLONE_NEWNET)
    finally:
        os.close(own)


class Pending:
    """A warm attachment being made by a child process (start), while the spare makes its reservation."""

    def __init__(self, pid: int, conf, steps: int, runner_locations: dict, netns_fd: int):
        self.pid, self.conf, self.steps, self.runner, self.netns_fd = pid, conf, steps, runner_locations, netns_fd


def start(container_id: str) -> Pending | None:
    """Starts the warm part of the default network for ``container_id`` in a child process, with the runner
    locations of this process's environment (the daemon's), owned by this process; None when that network
    is not defined yet (its first run defines it) or has no such part."""
    from pynet.runner import locations

    runner_locations = locations.resolve()
    atts = locations.attachments(runner_locations)
    try:
        conf = atts.runner.network(DEFAULT_NETWORK)
    except Exception:  # noqa: BLE001 - not defined (yet), or unreadable: the run reports that
        return None
    steps = request_independent_steps(conf)
    if not steps:
        return None
    try:
        netns_fd = _new_netns()
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:
        code = 1
        try:
            atts.warm(f"/proc/self/fd/{netns_fd}", os.getppid(), conf, IFNAME, container_id,
                      f"spare-{container_id[:12]}", steps)
            code = 0
        finally:
            os._exit(code)   # a failed part was undone by the chain
    return Pending(pid, conf, steps, runner_locations, netns_fd)


def finish(pending: Pending | None, container_id: str) -> WarmAttachment | None:
    """Waits for start()'s child; its WarmAttachment, or None when it failed (the run then attaches the
    ordinary way)."""
    if pending is None:
        return None
    from pynet.runner import locations

    try:
        _, status = os.waitpid(pending.pid, 0)
    except ChildProcessError:
        status = 0   # reaped by the launcher's wait for any child (container.wait): the cache tells
    entry = locations.runner(pending.runner).cached(pending.conf.name, container_id, IFNAME) if status == 0 else None
    if entry is None:
        os.close(pending.netns_fd)
        return None
    return WarmAttachment(entry, pending.steps, pending.runner, pending.netns_fd)


def may_fit(net: dict | None) -> bool:
    """Whether a run whose network record is ``net`` could adopt a warm attachment (fits() says if it does)."""
    return bool(net) and on_default_network(net.get("mode")) and not net.get("ip")


def fits(warm: WarmAttachment | None, net: dict | None) -> bool:
    """Whether a run whose network record is ``net`` can adopt ``warm``: the default network (or it by
    name) as it is defined now, ifname eth0, no --ip, the same runner locations."""
    if warm is None or warm.taken or not may_fit(net) or net.get("mode") not in ("default", warm.entry.network):
        return False
    if (net.get("ifname") or IFNAME) != warm.entry.ifname or (net.get("runner") or {}) != warm.runner:
        return False
    from pynet.runner import locations

    try:
        warm.conf = locations.runner(warm.runner).network(warm.entry.network)
    except Exception:  # noqa: BLE001 - gone or unreadable: the ordinary attach reports it
        return False
    return warm.conf.bytes == warm.entry.config


def release_if_asked_for(warm: WarmAttachment | None, net: dict | None) -> None:
    """DEL of ``warm`` now when a run asks for its address (--ip: a run the daemon leaves to the client),
    which it holds until then; else that run's ADD could find the address taken."""
    ip = (net or {}).get("ip")
    if warm is None or warm.taken or not ip:
        return
    held = [a.get("address", "").split("/")[0] for a in (warm.entry.result or {}).get("ips") or []]
    if ip in held:
        discard(warm)


def discard(warm: WarmAttachment | None) -> None:
    """DEL of a warm attachment no run adopted (idempotent). A failure leaves it to gc: its owner, this
    process, is gone soon."""
    if warm is None or warm.taken:
        return
    warm.taken = True
    from pynet.runner import locations

    try:
        locations.attachments(warm.runner).detach(warm.entry.container_id)
    except Exception:  # noqa: BLE001
        pass
    finally:
        os.close(warm.netns_fd)
