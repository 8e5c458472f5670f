"""`pynet image import/ls/rm/build-default`: the local image store (images.py)."""

from __future__ import annotations

import sys

from . import images, state


def _err(msg: str) -> None:
    print(f"pynet: {msg}", file=sys.stderr)


def _image_guard(fn):
    def wrapped(args):
        try:
            return fn(args) or 0
        except images.ImageError as exc:
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
def cmd_image_rm(args):
    in_use = set()
    for rec in state.all_records():
        in_use.update(rec.get("layers") or [])
    for name in args.names:
        images.remove(name, in_use)
        print(images.normalize(name))


@_image_guard
def cmd_image_pull_default(args):
    image = images.build_busybox()
    print(image["name"])


def register(sub) -> None:
    img = sub.add_parser("image", help="local image store")
    isub = img.add_subparsers(dest="image_command", metavar="COMMAND")
    p = isub.add_parser("import", help="import a rootfs tar/dir or an OCI image layout (dir or tar)")
    p.add_argument("source")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_image_import)
    p = isub.add_parser("ls", help="list images")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_image_ls)
    p = isub.add_parser("rm", help="remove images (and layers nothing else uses)")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=cmd_image_rm)
    p = isub.add_parser("build-default", help="(re)build the embedded busybox image from /bin/busybox")
    p.set_defaults(func=cmd_image_pull_default)
    img.set_defaults(func=lambda a: (img.print_help(), 2)[1])
