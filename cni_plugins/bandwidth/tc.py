"""Traffic control through pyroute2 on one namespace's IPRoute handle: the qdiscs and the filter the
bandwidth plugin sets up, the way the reference's ifb_creator.go sets them (no ``tc`` binary).

- ingress shaping (towards the container): ``root 1: tbf`` on the host veth;
- egress shaping (from the container): ``ingress ffff:`` on the host veth with a u32 match-all filter (prio
  1, protocol all, classid 1:1) whose mirred action redirects to an ifb device, and ``root 1: tbf`` on the ifb.
"""

from __future__ import annotations

import errno

from cni_plugins.netlink import dump, netlink_error_code

from .config import Tbf

TC_H_ROOT = 0xFFFFFFFF
TC_H_INGRESS = 0xFFFFFFF1
ROOT_HANDLE = 0x10000        # 1:
INGRESS_HANDLE = 0xFFFF0000  # ffff:
CLASSID = 0x10001            # 1:1
ETH_P_ALL = 0x0003
FILTER_PRIO = 1
TC_ACT_STOLEN = 4
MIRRED_EGRESS_REDIR = 1
_GONE = (errno.ENOENT, errno.EINVAL, errno.ENODEV)


def add_tbf(ipr, index: int, tbf: Tbf) -> None:
    """``tc qdisc replace dev IDX root handle 1: tbf`` with the exact rate/buffer/limit of the reference.

    pyroute2's ``tc("add", "tbf", ...)`` derives buffer and limit itself from rate/burst/latency (its
    rounding differs from the reference's in the last microsecond); the parameters computed in
    bandwidth.config go to the kernel as they are instead, in a tcmsg sent on the same handle."""
    from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST
    from pyroute2.netlink.rtnl import RTM_NEWQDISC
    from pyroute2.netlink.rtnl.tcmsg import tcmsg

    msg = tcmsg()
    msg["index"] = index
    msg["handle"] = ROOT_HANDLE
    msg["parent"] = TC_H_ROOT
    msg["attrs"] = [["TCA_KIND", "tbf"],
                    ["TCA_OPTIONS", {"attrs": [["TCA_TBF_PARMS", {"rate": tbf.rate, "limit": tbf.limit,
                                                                   "buffer": tbf.buffer, "mtu": 0}]]}]]
    ipr.nlm_request(msg, msg_type=RTM_NEWQDISC,
                    msg_flags=NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)


def add_redirect(ipr, index: int, ifb_index: int) -> None:
    """Ingress qdisc on ``index`` and a match-all u32 filter redirecting every packet to ``ifb_index``.
    An ingress qdisc already there (a repeated ADD) is replaced, so it never holds two redirects."""
    delete_qdisc(ipr, index, TC_H_INGRESS)
    ipr.tc("add", "ingress", index=index)
    ipr.tc("add-filter", "u32", index=index, parent=INGRESS_HANDLE, prio=FILTER_PRIO, protocol=ETH_P_ALL,
           target=CLASSID, keys=["0x0/0x0+0"],
           action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": ifb_index})


def delete_qdisc(ipr, index: int, parent: int) -> bool:
    """Deletes the qdisc at ``parent`` (TC_H_ROOT or TC_H_INGRESS) of a link; False when there was none
    (or the link is gone)."""
    handle = INGRESS_HANDLE if parent == TC_H_INGRESS else 0
    kind = "ingress" if parent == TC_H_INGRESS else None
    try:
        if kind:
            ipr.tc("del", kind, index=index)
        else:
            ipr.tc("del", index=index, handle=handle, parent=parent)
    except Exception as exc:
        if netlink_error_code(exc) in _GONE:
            return False
        raise
    return True


def qdiscs(ipr, index: int) -> list:
    return [m for m in dump(ipr.get_qdiscs, index=index) if m["index"] == index]


def qdisc_at(ipr, index: int, parent: int):
    for msg in qdiscs(ipr, index):
        if msg["parent"] == parent:
            return msg
    return None


def tbf_parms(msg) -> dict | None:
    """rate (bytes/s), buffer (ticks), limit (bytes) of a tbf qdisc message, or None when it is no tbf."""
    if msg is None or msg.get_attr("TCA_KIND") != "tbf":
        return None
    parms = msg.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")
    return {"rate": parms["rate"], "buffer": parms["buffer"], "limit": parms["limit"]}


def redirects(ipr, index: int) -> list[dict]:
    """The u32 filters under the ingress qdisc of a link as {prio, protocol, classid, mirred: [(eaction,
    ifindex)]}."""
    out = []
    for msg in dump(ipr.get_filters, index=index, parent=INGRESS_HANDLE):
        if msg.get_attr("TCA_KIND") != "u32":
            continue
        opts = msg.get_attr("TCA_OPTIONS")
        if opts is None or opts.get_attr("TCA_U32_SEL") is None:
            continue   # the hash table node the kernel lists along with the filter
        mirred = []
        acts = opts.get_attr("TCA_U32_ACT")
        for act in (acts["attrs"] if acts is not None else []):
            value = act[1]
            if value.get_attr("TCA_ACT_KIND") == "mirred":
                parms = value.get_attr("TCA_ACT_OPTIONS").get_attr("TCA_MIRRED_PARMS")
                mirred.append((parms["eaction"], parms["ifindex"]))
        info = msg["info"]
        out.append({"prio": info >> 16, "protocol": ((info & 0xFF) << 8) | ((info >> 8) & 0xFF),
                    "classid": opts.get_attr("TCA_U32_CLASSID"), "mirred": mirred})
    return out
