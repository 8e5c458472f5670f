"""The libcni result cache: ``<cache_dir>/results/<network>-<containerID>-<ifname>``, one JSON object
per attachment (kind "cniCacheV1"), so entries written by podman/containerd/cri-o are readable here and
ours are readable there. ``config`` holds the conflist bytes base64-encoded (Go's []byte in JSON)."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field

from cni_plugins.files import TMP_PREFIX, atomic_write

DEFAULT_CACHE_DIR = "/var/lib/cni"
KIND = "cniCacheV1"


@dataclass
class CacheEntry:
    container_id: str
    network: str
    ifname: str
    config: bytes = b""
    netns: str = ""
    cni_args: list[list[str]] = field(default_factory=list)
    capability_args: dict = field(default_factory=dict)
    result: dict | None = None
    path: str = ""

    def to_json(self) -> dict:
        out: dict = {"kind": KIND, "containerId": self.container_id,
                     "config": base64.b64encode(self.config).decode(), "ifName": self.ifname,
                     "networkName": self.network}
        # libcni's omitempty fields
        if self.netns:
            out["netns"] = self.netns
        if self.cni_args:
            out["cniArgs"] = [list(pair) for pair in self.cni_args]
        if self.capability_args:
            out["capabilityArgs"] = self.capability_args
        if self.result:
            out["result"] = self.result
        return out

    @classmethod
    def from_json(cls, obj: dict, path: str = "") -> "CacheEntry | None":
        """None for anything that is not a well-formed cniCacheV1 entry (libcni skips those too)."""
        if not isinstance(obj, dict) or obj.get("kind") != KIND:
            return None
        try:
            config = base64.b64decode(obj.get("config") or "")
        except (ValueError, TypeError):
            config = b""
        args = obj.get("cniArgs") or []
        caps = obj.get("capabilityArgs") or {}
        result = obj.get("result")
        entry = cls(container_id=str(obj.get("containerId") or ""), network=str(obj.get("networkName") or ""),
                    ifname=str(obj.get("ifName") or ""), config=config, netns=str(obj.get("netns") or ""),
                    cni_args=[list(p) for p in args if isinstance(p, (list, tuple)) and len(p) == 2],
                    capability_args=caps if isinstance(caps, dict) else {},
                    result=result if isinstance(result, dict) else None, path=path)
        if not entry.container_id or not entry.network or not entry.ifname:
            return None
        return entry

    @property
    def cni_args_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.cni_args}

    def attachment(self) -> dict:
        """The shape of one ``cni.dev/valid-attachments`` element."""
        return {"containerID": self.container_id, "ifname": self.ifname}


class ResultCache:
    def __init__(self, cache_dir: str = DEFAULT_CACHE_DIR):
        self.cache_dir = cache_dir
        self.results_dir = os.path.join(cache_dir, "results")

    def path(self, network: str, container_id: str, ifname: str) -> str:
        if not network or not container_id or not ifname:
            raise ValueError(f"cache file path requires network name ({network!r}), container ID "
                             f"({container_id!r}) and interface name ({ifname!r})")
        return os.path.join(self.results_dir, f"{network}-{container_id}-{ifname}")

    def write(self, entry: CacheEntry) -> str:
        os.makedirs(self.results_dir, mode=0o700, exist_ok=True)
        path = self.path(entry.network, entry.container_id, entry.ifname)
        atomic_write(path, json.dumps(entry.to_json()), mode=0o600)
        entry.path = path
        return path

    def read(self, network: str, container_id: str, ifname: str) -> CacheEntry | None:
        path = self.path(network, container_id, ifname)
        return self._load(path)

    def read_raw_result(self, network: str, container_id: str, ifname: str) -> dict | None:
        """The cached result; a legacy cache file (a bare result, pre-cniCacheV1) is accepted too."""
        path = self.path(network, container_id, ifname)
        try:
            with open(path, "rb") as f:
                obj = json.load(f)
        except (OSError, ValueError):
            return None
        if isinstance(obj, dict) and obj.get("kind") == KIND:
            result = obj.get("result")
            return result if isinstance(result, dict) else None
        return obj if isinstance(obj, dict) and "cniVersion" in obj else None

    def delete(self, network: str, container_id: str, ifname: str) -> None:
        try:
            os.unlink(self.path(network, container_id, ifname))
        except (FileNotFoundError, ValueError):
            pass

    def _load(self, path: str) -> CacheEntry | None:
        try:
            with open(path, "rb") as f:
                obj = json.load(f)
        except (OSError, ValueError):
            return None
        return CacheEntry.from_json(obj, path)

    def entries(self, container_id: str = "", network: str = "") -> list[CacheEntry]:
        """All cniCacheV1 entries, sorted by file name (as GetCachedAttachments), optionally filtered."""
        try:
            names = sorted(os.listdir(self.results_dir))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.startswith(TMP_PREFIX):
                continue
            if container_id and f"-{container_id}-" not in name:
                continue
            entry = self._load(os.path.join(self.results_dir, name))
            if entry is None:
                continue
            if container_id and entry.container_id != container_id:
                continue
            if network and entry.network != network:
                continue
            out.append(entry)
        return out
