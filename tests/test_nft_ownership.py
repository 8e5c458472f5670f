"""cni_plugins.nft, the one nft ownership layer, against a real sandbox netns: skeleton, own/replace,
remove by owner, GC per network, racing first writers, and an Nft handle bound to a netns fd.

Every handle here is bound to a sandbox namespace by fd (or created while the thread is inside one): the
test process itself lives in the root netns, which nothing here may touch."""

from __future__ import annotations

import contextlib
import os
import threading

import pytest

from cni_plugins import nft
from cni_plugins.nft import Chain, NftError, Part, Set, Table

T = Table("inet", "pynet-test", comment="pynet layer test", sets=(
    Set("addr4", "ipv4_addr"),
    Set("pairs", "ifname . ether_addr"),
    Set("ports", "inet_proto . inet_service", data="ipv4_addr . inet_service"),
    Set("claims", "inet_proto . inet_service"),
), chains=(
    Chain("admin"),
    Chain("forward", hook="filter forward", priority=0, rules=(
        "jump admin",
        "ip saddr @addr4 counter accept",
        "ip daddr @addr4 ct state established,related counter accept",
    )),
))


@contextlib.contextmanager
def bound(ns):
    """An Nft handle bound to ``ns`` by fd (the fd stays open while the handle is used)."""
    fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield nft.Nft(netns_fd=fd)
    finally:
        os.close(fd)


def elements(ns, set_name, table=T) -> dict:
    """canon(key) -> comment of one set or map of the test table ({} when absent)."""
    try:
        out = ns.nft_json(f"list {table.kind_of(set_name)} {table.ref} {set_name}")
    except RuntimeError:
        return {}
    for obj in out:
        for kind in ("set", "map"):
            if kind in obj:
                return {nft.canon(nft.value_of(e)): nft.owner_of(e) for e in obj[kind].get("elem", [])}
    return {}


def rules(ns, chain="forward", table=T) -> list:
    return [o["rule"] for o in ns.nft_json(f"list chain {table.ref} {chain}") if "rule" in o]


def key(value) -> str:
    return nft.canon(value)


def test_own_writes_skeleton_once_and_tags_elements(host_ns):
    with bound(host_ns) as h:
        nft.own(h, T, "a/eth0@n", {"addr4": ["10.1.0.2"], "pairs": [nft.concat("veth1", "02:00:00:00:00:01")],
                                   "ports": [(nft.concat("tcp", 80), nft.concat("10.1.0.2", 8080))]})
        nft.own(h, T, "b/eth0@n", {"addr4": ["10.1.0.3"]})
    assert elements(host_ns, "addr4") == {key("10.1.0.2"): "a/eth0@n", key("10.1.0.3"): "b/eth0@n"}
    assert elements(host_ns, "pairs") == {key(nft.concat("veth1", "02:00:00:00:00:01")): "a/eth0@n"}
    assert elements(host_ns, "ports") == {key(nft.concat("tcp", 80)): "a/eth0@n"}
    assert len(rules(host_ns)) == 3
    assert 'comment "pynet layer test"' in host_ns.nft_ruleset()


def test_an_element_left_by_an_earlier_owner_is_taken_over_and_its_late_del_leaves_it(host_ns):
    with bound(host_ns) as h:
        nft.own(h, T, "old/eth0@n", {"addr4": ["10.1.0.9"], "ports": [(nft.concat("tcp", 80),
                                                                       nft.concat("10.1.0.9", 80))]})
        nft.own(h, T, "new/eth0@n", {"addr4": ["10.1.0.9"], "ports": [(nft.concat("tcp", 80),
                                                                       nft.concat("10.1.0.9", 80))]})
        assert elements(host_ns, "addr4") == {key("10.1.0.9"): "new/eth0@n"}
        assert elements(host_ns, "ports") == {key(nft.concat("tcp", 80)): "new/eth0@n"}
        assert nft.remove_owned(h, T, "old/eth0@n") == {}
        assert elements(host_ns, "addr4") == {key("10.1.0.9"): "new/eth0@n"}
        assert nft.owned(h, T, "new/eth0@n") == {"addr4": ["10.1.0.9"], "ports": [nft.concat("tcp", 80)]}
        assert nft.owned(h, T, "new/eth0@n", ["addr4"]) == {"addr4": ["10.1.0.9"]}


def test_exclusive_elements_are_never_taken_over(host_ns):
    with bound(host_ns) as h:
        nft.own(h, T, "a/eth0", {"claims": [nft.concat("tcp", 8080)]}, exclusive=["claims"])
        with pytest.raises(NftError) as err:
            nft.own(h, T, "b/eth0", {"claims": [nft.concat("tcp", 8080)], "addr4": ["10.1.0.4"]},
                    exclusive=["claims"])
    assert err.value.exists
    assert elements(host_ns, "claims") == {key(nft.concat("tcp", 8080)): "a/eth0"}
    assert elements(host_ns, "addr4") == {}  # one transaction: nothing of b's went in


def test_remove_owned_takes_everything_of_the_tag_in_one_go_and_nothing_else(host_ns):
    with bound(host_ns) as h:
        nft.own(h, T, "a/eth0@n", {"addr4": ["10.1.0.2", "10.1.0.5"], "pairs": [nft.concat("v1", "02:00:00:00:00:01")]})
        nft.own(h, T, "b/eth0@n", {"addr4": ["10.1.0.3"]})
        removed = nft.remove_owned(h, T, "a/eth0@n")
        assert sorted(removed) == ["addr4", "pairs"] and len(removed["addr4"]) == 2
        assert elements(host_ns, "addr4") == {key("10.1.0.3"): "b/eth0@n"}
        assert elements(host_ns, "pairs") == {}
        assert nft.remove_owned(h, T, "a/eth0@n") == {}  # idempotent


def test_remove_on_an_absent_table_is_a_no_op(host_ns):
    with bound(host_ns) as h:
        assert nft.remove_owned(h, T, "a/eth0@n") == {}
        assert nft.collect_garbage(h, T, "n", set()) == {}
        assert nft.owned(h, T, "a/eth0@n") == {} and nft.owned(h, T, "a/eth0@n", ["addr4"]) == {}
    assert "pynet-test" not in host_ns.nft_ruleset()


def test_gc_removes_invalid_owners_of_its_network_only(host_ns):
    with bound(host_ns) as h:
        nft.own(h, T, "a1/eth0@net-a", {"addr4": ["10.1.0.1"]})
        nft.own(h, T, "a2/eth0@net-a", {"addr4": ["10.1.0.2"]})
        nft.own(h, T, "b1/eth0@net-b", {"addr4": ["10.1.0.3"]})
        h.apply([{"add": {"element": {"family": "inet", "table": T.name, "name": "addr4", "elem": ["10.1.0.4"]}}}])
        removed = nft.collect_garbage(h, T, "net-a", {"a1/eth0@net-a"})
    assert [nft.owner_of(e) for e in removed["addr4"]] == ["a2/eth0@net-a"]
    assert elements(host_ns, "addr4") == {key("10.1.0.1"): "a1/eth0@net-a", key("10.1.0.3"): "b1/eth0@net-b",
                                          key("10.1.0.4"): ""}


def test_gc_of_a_long_network_name_uses_its_digest_suffix(host_ns):
    long_net = "n" * 60
    tag = nft.network_owner_tag("c1", "eth0", long_net)
    assert len(tag) <= 96 and tag.endswith(nft.network_suffix(long_net)) and long_net not in tag
    with bound(host_ns) as h:
        nft.own(h, T, tag, {"addr4": ["10.1.0.1"]})
        nft.collect_garbage(h, T, long_net, set())
    assert elements(host_ns, "addr4") == {}


def test_skeleton_is_written_again_when_the_table_was_removed_and_rules_repaired_on_request(host_ns):
    with bound(host_ns) as h:
        nft.own(h, T, "a/eth0", {"addr4": ["10.1.0.2"]})
        host_ns.nft_json(f"delete table {T.ref}")
        nft.own(h, T, "a/eth0", {"addr4": ["10.1.0.2"]})
        assert len(rules(host_ns)) == 3
        host_ns.nft_json(f"flush chain {T.ref} forward")
        assert not nft.rules_in_place(h, T)
        nft.own(h, T, "b/eth0", {"addr4": ["10.1.0.3"]})  # fast path: rules not looked at
        assert rules(host_ns) == []
        nft.own(h, T, "c/eth0", {"addr4": ["10.1.0.4"]}, check_rules=True)
        assert nft.rules_in_place(h, T) and len(rules(host_ns)) == 3
    assert len(elements(host_ns, "addr4")) == 3


def test_the_skeleton_leaves_a_chain_without_declared_rules_alone(host_ns):
    with bound(host_ns) as h:
        nft.write_skeleton(h, T)
        h.run_script(f"add rule {T.ref} admin ip saddr 192.0.2.1 drop")
        nft.write_skeleton(h, T)
    assert "192.0.2.1 drop" in host_ns.nft_ruleset()
    assert len(rules(host_ns)) == 3


def test_racing_first_writers_leave_one_copy_of_the_rules(host_ns):
    fds = [os.open(host_ns.path, os.O_RDONLY | os.O_CLOEXEC) for _ in range(6)]
    start = threading.Barrier(6)
    errors = []

    def first_add(i):
        try:
            h = nft.Nft(netns_fd=fds[i])
            start.wait()
            nft.own(h, T, f"c{i}/eth0", {"addr4": [f"10.1.0.{10 + i}"]})
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_add, args=(i,)) for i in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for fd in fds:
            os.close(fd)
    assert not errors
    assert len(rules(host_ns)) == 3
    assert len(elements(host_ns, "addr4")) == 6


def test_a_part_is_written_once_however_often_it_is_ensured(host_ns):
    part = Part(sets=(Set("extra", "ipv4_addr"),), chains=(Chain("p1", rules=("ip saddr @extra accept",)),),
                rules=(("admin", "jump p1"),))
    with bound(host_ns) as h:
        nft.write_skeleton(h, T)
        for _ in range(3):
            nft.ensure_part(h, T, part)
        nft.own(h, T, "a/eth0", {"extra": ["10.1.0.7"]})
    assert len(rules(host_ns, "admin")) == 1 and len(rules(host_ns, "p1")) == 1
    assert elements(host_ns, "extra") == {key("10.1.0.7"): "a/eth0"}


def test_delete_exactly_fails_whole_unless_every_element_is_there(host_ns):
    with bound(host_ns) as h:
        nft.own(h, T, "a/eth0", {"addr4": ["10.1.0.2"], "claims": [nft.concat("tcp", 80)]})
        with pytest.raises(NftError) as err:
            nft.delete_exactly(h, T, {"addr4": ["10.1.0.2"], "claims": [nft.concat("udp", 80)]})
        assert err.value.missing
        assert len(elements(host_ns, "addr4")) == 1
        nft.delete_exactly(h, T, {"addr4": ["10.1.0.2"], "claims": [nft.concat("tcp", 80)]})
    assert elements(host_ns, "addr4") == {} and elements(host_ns, "claims") == {}


def test_nft_bound_to_an_fd_writes_into_that_netns_not_the_callers(make_netns):
    caller, target = make_netns("pynt-h"), make_netns("pynt-h")
    fd = os.open(target.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with caller.entered():
            here = os.stat("/proc/thread-self/ns/net").st_ino
            h = nft.Nft(netns_fd=fd)
            nft.own(h, T, "a/eth0", {"addr4": ["10.1.0.2"]})
            assert os.stat("/proc/thread-self/ns/net").st_ino == here  # the thread came back
            own = nft.Nft()  # no fd: the caller's netns, as before
            nft.own(own, T, "b/eth0", {"addr4": ["10.1.0.3"]})
        # The bound handle keeps writing into its netns whatever netns the thread is in (here another one).
        with make_netns("pynt-c").entered():
            nft.own(h, T, "c/eth0", {"addr4": ["10.1.0.4"]})
    finally:
        os.close(fd)
    assert elements(target, "addr4") == {key("10.1.0.2"): "a/eth0", key("10.1.0.4"): "c/eth0"}
    assert elements(caller, "addr4") == {key("10.1.0.3"): "b/eth0"}


def test_the_tag_scheme_lives_in_nft_and_stays_importable_from_skel():
    from cni_plugins import skel

    assert skel.owner_tag is nft.owner_tag and skel.network_owner_tag is nft.network_owner_tag
    assert skel.network_suffix is nft.network_suffix
    assert nft.owner_tag("c1", "eth0") == "c1/eth0"
    assert nft.network_owner_tag("c1", "eth0", "net") == "c1/eth0@net"
    long_owner = nft.owner_tag("x" * 120, "eth0")
    assert long_owner.startswith("#") and len(long_owner) == 41
    assert len(nft.network_owner_tag("x" * 120, "eth0", "n" * 200)) <= 96


def test_context_pool_makes_at_most_its_size_and_queues_the_rest_until_one_is_free():
    """Requests beyond the pool's size wait for a context (the daemon's case) rather than making more."""
    import time

    from cni_plugins.nft.handle import _Pool

    pool, made, inside, peak, lock = _Pool(), [], [0], [0], threading.Lock()

    def use():
        with pool.context(lambda: made.append(object()) or made[-1]):
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.02)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=use) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert len(made) == peak[0] == _Pool.SIZE
