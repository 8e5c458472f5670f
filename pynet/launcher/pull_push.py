"""`pynet pull` / `pynet push`: images between a registry (registry.py) and the local store (images.py).

A pull downloads every blob it lacks into a scratch dir of the store, each checked against its digest,
before extracting any: a bad blob or manifest leaves no layer and no image record behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from . import images
from .registry import (INDEX_TYPES, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Client, RegistryError, credentials,
                       parse_reference, pick_platform)

LAYER_TYPES = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
               "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.docker.image.rootfs.diff.tar.gzip",
               "application/vnd.docker.image.rootfs.diff.tar.zstd")


def _client(ref, creds: str | None, auth_file: str | None, tls_verify: bool) -> Client:
    return Client(ref, credentials(ref, creds, auth_file), tls_verify)


def pull(text: str, creds: str | None = None, auth_file: str | None = None, tls_verify: bool = True) -> dict:
    """Pulls ``text`` ([registry/]repo[:tag][@digest]) and stores it under that name; the image record."""
    ref = parse_reference(text)
    name = images.normalize(text)
    client = _client(ref, creds, auth_file, tls_verify)
    manifest, media, digest = client.get_manifest(ref.digest or ref.tag)
    index_digest = None
    if media in INDEX_TYPES:
        index_digest = digest
        entry = pick_platform(manifest)
        manifest, media, digest = client.get_manifest(entry["digest"])
        if media in INDEX_TYPES:
            raise RegistryError(f"{ref}: the manifest list entry {entry['digest']} is another list")
    layers = manifest.get("layers") or []
    for layer in layers:
        if layer.get("mediaType") not in LAYER_TYPES:
            raise RegistryError(f"{ref}: layer {layer.get('digest')} has unsupported media type {layer.get('mediaType')!r}")
    if not (manifest.get("config") or {}).get("digest"):
        raise RegistryError(f"{ref}: manifest has no config")

    scratch = images.scratch_dir()
    made: list[str] = []
    try:
        config_path = os.path.join(scratch, "config")
        client.fetch_blob(manifest["config"]["digest"], config_path)
        config = _json(open(config_path, "rb").read(), f"config of {ref}")
        wanted = []   # (layer id, downloaded blob or None when the store has it)
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(layers):
            raise RegistryError(f"{ref}: the config lists {len(diff_ids)} layer digests (rootfs.diff_ids), "
                                f"the manifest {len(layers)} layers")
        for layer, expected in zip(layers, diff_ids):
            layer_id = layer["digest"].replace(":", "-")
            if os.path.isdir(images.layer_path(layer_id)):
                wanted.append((layer_id, None))
                continue
            blob = os.path.join(scratch, layer_id)
            client.fetch_blob(layer["digest"], blob)
            got = images.diff_id(blob)
            if got != expected:
                raise RegistryError(f"{ref}: layer {layer['digest']} unpacks to content with digest {got}, the image "
                                    f"config says {expected}; nothing kept")
            wanted.append((layer_id, blob))
        for layer_id, blob in wanted:
            if blob is not None and not os.path.isdir(images.layer_path(layer_id)):   # not pulled meanwhile
                images.extract_layer_file(blob, layer_id)
                made.append(layer_id)
    except BaseException as exc:
        for layer_id in made:
            shutil.rmtree(images.layer_path(layer_id), ignore_errors=True)
        if isinstance(exc, OSError):   # the store's disk, not the registry: ENOSPC, EROFS ...
            raise images.ImageError(f"pulling {ref}: writing the image store failed ({exc.strerror or exc}); "
                                    "nothing kept") from None
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    extra = {"digest": digest, "repository": ref.name, "architecture": config.get("architecture"),
             "os": config.get("os"), "image_created": config.get("created")}
    if index_digest:
        extra["index_digest"] = index_digest
    return images.save(name, [layer_id for layer_id, _ in wanted], images.image_config(config.get("config") or {}),
                       str(ref), **extra)


def push(name: str, dest: str | None = None, creds: str | None = None, auth_file: str | None = None,
         tls_verify: bool = True) -> dict:
    """Pushes local image ``name`` to ``dest`` (default: its own name) as an OCI manifest with gzip layers."""
    image = images.ensure(name)
    ref = parse_reference(dest or name)
    if ref.digest:
        raise RegistryError(f"cannot push to {dest or name}: a push names a tag, not a digest")
    client = _client(ref, creds, auth_file, tls_verify)
    scratch = images.scratch_dir()
    try:
        descriptors, diff_ids = [], []
        for i, layer_id in enumerate(image["layers"]):
            path = os.path.join(scratch, f"layer{i}")
            digest, size, diff_id = images.write_layer_tar(layer_id, path)
            descriptors.append(({"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": size}, path))
            diff_ids.append(diff_id)
        config = json.dumps({
            "created": image.get("image_created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(image["created"])),
            "architecture": image.get("architecture") or images.goarch(), "os": image.get("os") or "linux",
            "config": {k: v for k, v in image["config"].items() if v not in ("", [], None)},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}}, sort_keys=True).encode()
        config_path = os.path.join(scratch, "config")
        with open(config_path, "wb") as fh:
            fh.write(config)
        import hashlib

        config_desc = {"mediaType": OCI_CONFIG, "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                       "size": len(config)}
        for desc, path in descriptors + [(config_desc, config_path)]:
            client.push_blob(desc["digest"], path)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc,
                               "layers": [d for d, _ in descriptors]}).encode()
        digest = client.put_manifest(ref.digest or ref.tag, manifest, OCI_MANIFEST)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"name": images.normalize(name), "destination": str(ref), "digest": digest,
            "layers": [d["digest"] for d, _ in descriptors]}


def _json(body: bytes, what: str) -> dict:
    try:
        value = json.loads(body)
    except ValueError:
        raise RegistryError(f"{what}: not JSON") from None
    if not isinstance(value, dict):
        raise RegistryError(f"{what}: not a JSON object")
    return value
