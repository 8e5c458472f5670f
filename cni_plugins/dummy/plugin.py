"""dummy: a dummy link made in the container netns as CNI_IFNAME, addressed by IPAM (the reference's `dummy`).

A kernel without the dummy driver: code 50 naming it, nothing left behind (the link is made before IPAM).
DEL, CHECK, STATUS and GC: cni_plugins/container_links.py.
"""

from __future__ import annotations

from cni_plugins import container_links
from cni_plugins.handles import Handles
from cni_plugins.plugin import Plugin
from cni_plugins.skel import Request
from cni_plugins.results import Result

from . import config as dummy_config
from .config import DummyConfig


def add(req: Request, conf: DummyConfig, handles: Handles) -> Result:
    return container_links.add(req, handles, "dummy",
                               lambda container: container_links.create_link(req, container, "dummy"),
                               conf.ipam, conf.dns)


def check(req: Request, conf: DummyConfig, handles: Handles) -> None:
    container_links.check(req, handles, "dummy", "dummy", conf.ipam)


PLUGIN = Plugin(name="dummy", load_config=dummy_config.load, add=add, delete=container_links.delete, check=check,
                status=container_links.status, gc=container_links.gc,
                load_teardown_config=container_links.teardown_config)
