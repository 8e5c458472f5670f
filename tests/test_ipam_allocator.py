"""The allocator's order and the store's locking, in-process (no namespaces needed: IPAM touches no network)."""

import ipaddress
from concurrent.futures import ThreadPoolExecutor

from cni_plugins.skel import Request
from cni_plugins.ipam import host_local
from cni_plugins.ipam.allocator import candidates, has_free_address
from cni_plugins.ipam.config import parse_range_set


def ips(*texts):
    return [ipaddress.ip_address(t) for t in texts]


SET = parse_range_set([{"subnet": "10.0.0.0/29", "rangeStart": "10.0.0.4"},  # .4 .5 .6 (gateway .1)
                       {"subnet": "10.0.1.0/29", "gateway": "10.0.1.2"}], "ranges[0]")  # .1 .3 .4 .5 .6


def order(last):
    return [ip for ip, _ in candidates(SET, ipaddress.ip_address(last) if last else None)]


def test_without_cursor_order_starts_at_first_range_start_and_skips_gateways():
    assert order(None) == ips("10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.1", "10.0.1.3", "10.0.1.4",
                              "10.0.1.5", "10.0.1.6")


def test_cursor_in_middle_wraps_across_ranges_and_ends_at_itself():
    assert order("10.0.1.4") == ips("10.0.1.5", "10.0.1.6", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.1",
                                    "10.0.1.3", "10.0.1.4")


def test_cursor_at_range_end_moves_to_next_range():
    assert order("10.0.0.6")[:2] == ips("10.0.1.1", "10.0.1.3")


def test_cursor_outside_the_set_is_ignored():
    assert order("192.168.0.1") == order(None)


def test_free_address_count_ignores_gateway_and_foreign_leases():
    full = dict.fromkeys(order(None))
    assert not has_free_address(SET, full)
    assert has_free_address(SET, {ip: None for ip in order(None)[1:]})
    assert not has_free_address(SET, full | {ipaddress.ip_address("10.9.9.9"): None})


def test_threads_of_one_process_never_share_an_address(tmp_path):
    # A resident daemon runs plugin code on threads: the flock must separate them like processes.
    conf = {"cniVersion": "1.0.0", "name": "thr-net", "type": "bridge",
            "ipam": {"type": "host-local", "dataDir": str(tmp_path), "ranges": [[{"subnet": "10.1.0.0/24"}]]}}

    def one(i):
        req = Request(command="ADD", container_id=f"c{i}", netns="", ifname="eth0", args={}, path=(),
                      config=conf, stdin=b"")
        return str(host_local.add(req, host_local.load_host_local(req), None).ips[0].address)

    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(one, range(40)))
    assert len(set(got)) == 40
