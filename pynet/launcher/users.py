"""Who a container's command runs as: the image's ``User`` or ``-u/--user`` (uid[:gid] or name[:group]),
read as Docker reads it (moby/sys/user GetExecUser): names from the image's /etc/passwd and /etc/group,
numbers used as they are even without an entry, the gid from the passwd entry when none is given,
supplementary groups from /etc/group membership plus ``--group-add``, HOME from the passwd entry."""

from __future__ import annotations

import os
import stat

from .rootfs import secure_join
from .security import User


class UserError(ValueError):
    pass


def _image_file(roots: list[str], path: str) -> list[list[str]]:
    """The colon-separated lines of ``path`` in the top-most layer that has it (``roots`` top-most first;
    an overlayfs whiteout hides it)."""
    for root in roots:
        target = secure_join(root, path)
        try:
            st = os.lstat(target)
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            return []   # deleted in this layer
        try:
            with open(target, errors="replace") as fh:
                return [line.rstrip("\n").split(":") for line in fh if line.strip() and not line.startswith("#")]
        except OSError:
            return []
    return []


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) < 1 << 32 else None


def resolve(spec: str | None, roots: list[str], group_add=()) -> User:
    """The User for ``spec`` (the image's User or --user; None or "" is root) in the image whose layer
    directories are ``roots`` (top-most first). UserError names the value that cannot be resolved."""
    spec = spec or ""
    name, _, group = spec.partition(":")
    passwd = [e for e in _image_file(roots, "/etc/passwd") if len(e) >= 7]
    groups = [e for e in _image_file(roots, "/etc/group") if len(e) >= 3]
    name = name or "0"
    entry = next((e for e in passwd if e[0] == name), None)
    if entry is None and _number(name) is not None:
        entry = next((e for e in passwd if _number(e[2]) == _number(name)), None)
    if entry is None and _number(name) is None:
        raise UserError(f"unable to find user {name!r} (of user {spec!r}): no matching entry in the image's /etc/passwd")
    uid = _number(entry[2]) if entry else _number(name)
    gid = (_number(entry[3]) or 0) if entry else 0
    home = entry[5] if entry and entry[5] else "/"
    if uid is None:
        raise UserError(f"user {spec!r}: the image's /etc/passwd gives {name!r} the uid {entry[2]!r}")

    def group_id(text: str, what: str) -> int:
        found = next((g for g in groups if g[0] == text), None)
        if found is None and _number(text) is not None:
            return _number(text)
        if found is None or _number(found[2]) is None:
            raise UserError(f"unable to find group {text!r} (of {what}): no matching entry in the image's /etc/group")
        return _number(found[2])

    if group:
        gid = group_id(group, f"user {spec!r}")
    extra = []
    if entry is not None:
        extra = [_number(g[2]) for g in groups if _number(g[2]) is not None and len(g) > 3
                 and entry[0] in g[3].split(",")]
    extra += [group_id(g, f"--group-add {g!r}") for g in group_add]
    return User(uid=uid, gid=gid, groups=list(dict.fromkeys(extra)), home=home)
