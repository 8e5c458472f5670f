"""The namespace switching under cni_plugins/handles.py (syscalls.entered), against sandbox namespaces: the
test thread goes into them and always comes back; the root netns is never changed."""

import os

from cni_plugins import syscalls


def test_entering_the_netns_a_thread_is_in_switches_nothing_and_leaves_it_there(host_ns, container_ns, monkeypatch):
    """A standalone plugin's host handle is the namespace it runs in: making something there needs no
    switch, and the thread is where it was afterwards, also inside another entered namespace."""
    here = lambda: os.stat("/proc/thread-self/ns/net").st_ino  # noqa: E731
    switches = []
    real_setns = syscalls.setns
    monkeypatch.setattr(syscalls, "setns", lambda fd, nstype=0: switches.append(fd) or real_setns(fd, nstype))
    start = here()
    host_fd = os.open(host_ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with syscalls.entered(host_ns.path):
            host = here()
            before = len(switches)
            with syscalls.entered(host_fd):
                assert here() == host
            assert here() == host and len(switches) == before
            with syscalls.entered(container_ns.path):
                with syscalls.entered(host_fd):
                    assert here() == host
                assert here() == os.stat(container_ns.path).st_ino
            assert here() == host
    finally:
        os.close(host_fd)
    assert here() == start and host != start
