"""The dummy plugin's configuration: an IPAM plugin (required, as the reference) and ``dns``."""

from __future__ import annotations

from dataclasses import dataclass, field

from cni_plugins import container_links
from cni_plugins.skel import Request
from cni_plugins.results import DNS


@dataclass(frozen=True)
class DummyConfig:
    """The dummy plugin's validated config."""
    ipam: str | None
    dns: DNS = field(default_factory=DNS)


def load(req: Request) -> DummyConfig:
    ipam = container_links.ipam_options(req, "a dummy interface requires an IPAM configuration")
    return DummyConfig(ipam, container_links.dns_option(req))
