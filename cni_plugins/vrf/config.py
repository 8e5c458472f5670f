"""The vrf plugin's configuration (the reference's plugins/meta/vrf VRFNetConf), validated once.

``vrfname`` (required: the VRF device in the container netns), ``table`` (optional: the routing table of a
VRF this plugin creates; 0 or absent: the first table id no VRF of the namespace uses, from 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from cni_plugins.config import option_int, validate_link_name

from cni_plugins.skel import Request

MAX_TABLE = 2**32 - 1


@dataclass(frozen=True)
class VrfConfig:
    """The vrf plugin's validated config."""
    vrfname: str
    table: int = 0


def load(req: Request) -> VrfConfig:
    return VrfConfig(validate_link_name("vrfname", req.config.get("vrfname")),
                     option_int(req.config, "table", 0, minimum=0, maximum=MAX_TABLE))
