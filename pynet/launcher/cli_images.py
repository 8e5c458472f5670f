"""`pynet image import/ls/inspect/tag/rm/build-default`: the local image store (images.py); `pynet pull/push`
(also `pynet image pull/push`): images from and to an OCI registry (pull_push.py)."""

from __future__ import annotations

import sys

from . import images, state


def _err(msg: str) -> None:
    print(f"pynet: {msg}", file=sys.stderr)


def _registry_error():
    from .registry import RegistryError

    return RegistryError


def _image_guard(fn):
    def wrapped(args):
        try:
            return fn(args) or 0
        except (images.ImageError, _registry_error()) as exc:
            msg = str(exc)
            if "not a tar archive (" in msg:   # tarfile's list of every compression it tried: not the user's terms
                msg = msg.split(" (", 1)[0] + " (expected a tar, tar.gz/bz2/xz, a rootfs dir or an OCI layout)"
            if getattr(args, "json", False):
                import json

                print(json.dumps({"error": msg}))
            else:
                _err(msg)
            return 1
    return wrapped


@_image_guard
def cmd_image_import(args):
    image = images.import_image(args.source, args.name)
    if args.json:
        import json

        print(json.dumps([image], indent=2, default=str))
        return
    print(f"{image['name']} ({len(image['layers'])} layer{'s' if len(image['layers']) != 1 else ''})")


@_image_guard
def cmd_image_ls(args):
    import json

    found = images.list_images()
    if args.json:
        print(json.dumps(found, indent=2))
        return
    fmt = "{:<30}  {:>6}  {:>10}  {}"
    print(fmt.format("IMAGE", "LAYERS", "SIZE", "SOURCE"))
    for img in found:
        print(fmt.format(img["name"], len(img["layers"]), f"{images.size_of(img) / 1048576:.1f}MiB", img.get("source", "")))


@_image_guard
def cmd_image_inspect(args):
    import json

    found = []
    for name in args.names:
        image = images.get(name)
        if image is None:
            raise images.ImageError(f"no such image: {name}")
        found.append(dict(image, size=images.size_of(image)))
    print(json.dumps(found, indent=2))


@_image_guard
def cmd_image_tag(args):
    image = images.tag(args.source, args.target)
    if args.json:
        import json

        print(json.dumps([image], indent=2))
        return
    print(image["name"])


@_image_guard
def cmd_pull(args):
    from . import pull_push

    image = pull_push.pull(args.reference, args.creds, args.authfile, args.tls_verify)
    if args.json:
        import json

        print(json.dumps([image], indent=2))
        return
    n = len(image["layers"])
    print(f"{image['name']} {image['digest']} ({n} layer{'s' if n != 1 else ''})")


@_image_guard
def cmd_push(args):
    from . import pull_push

    pushed = pull_push.push(args.image, args.destination, args.creds, args.authfile, args.tls_verify)
    if args.json:
        import json

        print(json.dumps([pushed], indent=2))
        return
    print(f"{pushed['destination']} {pushed['digest']}")


def _bool(text: str) -> bool:
    import argparse

    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")
    return value


def _add_registry_options(p) -> None:
    p.add_argument("--creds", metavar="USER:PASSWORD", help="registry login (else the auth file's entry)")
    p.add_argument("--authfile", metavar="FILE", help="podman/docker auth.json (default: $REGISTRY_AUTH_FILE, "
                   "$XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json)")
    p.add_argument("--tls-verify", type=_bool, nargs="?", const=True, default=True, metavar="BOOL",
                   help="--tls-verify=false: accept any certificate, and plain HTTP (a local registry)")
    p.add_argument("--json", action="store_true")


def _register_pull_push(sub) -> None:
    p = sub.add_parser("pull", help="pull an image from a registry: [REGISTRY/]REPO[:TAG|@DIGEST]")
    p.add_argument("reference")
    _add_registry_options(p)
    p.set_defaults(func=cmd_pull)
    p = sub.add_parser("push", help="push a local image to a registry (DESTINATION default: its name)")
    p.add_argument("image")
    p.add_argument("destination", nargs="?")
    _add_registry_options(p)
    p.set_defaults(func=cmd_push)


@_image_guard
def cmd_image_rm(args):
    in_use = set()
    for rec in state.all_records():
        in_use.update(rec.get("layers") or [])
    removed = []
    for name in args.names:
        images.remove(name, in_use)
        removed.append(images.normalize(name))
        if not args.json:
            print(removed[-1])
    if args.json:
        import json

        print(json.dumps([{"name": n, "removed": True} for n in removed]))


@_image_guard
def cmd_image_pull_default(args):
    image = images.build_busybox()
    print(image["name"])


def register(sub) -> None:
    _register_pull_push(sub)
    img = sub.add_parser("image", help="local image store")
    isub = img.add_subparsers(dest="image_command", metavar="COMMAND")
    _register_pull_push(isub)
    p = isub.add_parser("import", help="import a rootfs tar/dir or an OCI image layout (dir or tar)")
    p.add_argument("source")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_image_import)
    p = isub.add_parser("ls", help="list images")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_image_ls)
    p = isub.add_parser("inspect", help="image records as JSON (layers, config, digest, size)")
    p.add_argument("names", nargs="+")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_image_inspect)
    p = isub.add_parser("tag", help="give an image another name")
    p.add_argument("source")
    p.add_argument("target")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_image_tag)
    p = isub.add_parser("rm", help="remove images (and layers nothing else uses)")
    p.add_argument("names", nargs="+")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_image_rm)
    p = isub.add_parser("build-default", help="(re)build the embedded busybox image from /bin/busybox")
    p.set_defaults(func=cmd_image_pull_default)
    img.set_defaults(func=lambda a: (img.print_help(), 2)[1])
