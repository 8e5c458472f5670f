"""Which device nodes a container may create and open: Docker's default allowlist (deny everything, then
mknod of any character or block device, read/write of null, zero, full, random, urandom, tty, console,
ptmx, the pts, and fuse), plus the devices given with ``--device``.

The same rules are enforced in both cgroup worlds, whichever this machine has (a hybrid has both):

    effective(rules)         -> (default allows?, the exceptions): the rules read in order, as the v1
                                controller reads writes to devices.allow and devices.deny
    apply_v1(path, rules)    "a" to devices.deny (or .allow), then each exception to the other file
    program(rules)           -> a BPF_PROG_TYPE_CGROUP_DEVICE program (bytes of eBPF instructions)
    attach_v2(path, rules)   loads it and attaches it to a cgroup2 directory

The program is the one runc's devicefilter generates: read (type, access, major, minor) from the
``bpf_cgroup_dev_ctx``, test each exception in turn (its verdict on a match), the default after the last.
"""

from __future__ import annotations

import errno
import os
import stat
import struct

from .value_objects import Fields


class DeviceError(ValueError):
    pass


class Rule(Fields):
    """An allow (or deny) rule: kind "c", "b" or "a" (both); major/minor None for any; access a subset of
    "rwm". A rule of kind "a" without numbers is about every device: it sets the default."""
    FIELDS = {"kind": "a", "major": None, "minor": None, "access": "rwm", "allow": True}

    def everything(self) -> bool:
        return self.kind == "a" and self.major is None and self.minor is None

    def line(self) -> str:
        num = lambda n: "*" if n is None else str(n)   # noqa: E731
        return f"{self.kind} {num(self.major)}:{num(self.minor)} {self.access}"


DEFAULT_RULES = (
    Rule("c", None, None, "m"), Rule("b", None, None, "m"),       # mknod of anything
    Rule("c", 1, 3), Rule("c", 1, 5), Rule("c", 1, 7),            # null, zero, full
    Rule("c", 1, 8), Rule("c", 1, 9),                              # random, urandom
    Rule("c", 5, 0), Rule("c", 5, 1), Rule("c", 5, 2),             # tty, console, ptmx
    Rule("c", 136, None),                                          # /dev/pts/*
    Rule("c", 10, 229),                                            # fuse (in Docker's DefaultSpec)
)


class Device(Fields):
    """A --device: the host node, its path in the container, the access granted."""
    FIELDS = {"host": None, "path": None, "access": "rwm", "kind": "c", "major": 0, "minor": 0}

    def rule(self) -> Rule:
        return Rule(self.kind, self.major, self.minor, self.access)


def parse_device(spec: str) -> Device:
    """--device HOST[:CONTAINER[:rwm]] (the host node must exist: its type and numbers are taken from it)."""
    parts = spec.split(":")
    host = parts[0]
    path = parts[1] if len(parts) > 1 and parts[1] else host
    access = parts[2] if len(parts) > 2 else "rwm"
    if len(parts) == 2 and parts[1] and not parts[1].startswith("/") and set(parts[1]) <= set("rwm"):
        path, access = host, parts[1]   # HOST:rwm, as Docker reads it
    if len(parts) > 3 or not host.startswith("/") or not path.startswith("/"):
        raise DeviceError(f"invalid --device {spec!r}: expected /HOST[:/CONTAINER[:rwm]]")
    if not access or not set(access) <= set("rwm"):
        raise DeviceError(f"invalid --device {spec!r}: access {access!r} is not a combination of r, w, m")
    try:
        st = os.stat(host)
    except OSError as exc:
        raise DeviceError(f"--device {spec!r}: {host}: {exc.strerror}") from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise DeviceError(f"--device {spec!r}: {host} is not a character or block device")
    return Device(host, path, "".join(c for c in "rwm" if c in access), kind,
                  os.major(st.st_rdev), os.minor(st.st_rdev))


def rules_for(devices=()) -> list[Rule]:
    return list(DEFAULT_RULES) + [d.rule() for d in devices]


def effective(rules) -> tuple[bool, list[Rule]]:
    """(whether devices are allowed by default, the exceptions) that ``rules`` leave, read in order from
    deny-all as the kernel reads them: a rule for every device sets the default and drops the exceptions;
    a rule against the default adds its access to the exception of the same kind and numbers; a rule
    agreeing with the default takes its access away from that exception (a deny after an allow)."""
    default_allow, exceptions = False, {}
    for rule in rules:
        if rule.everything():
            default_allow, exceptions = rule.allow, {}
            continue
        if not rule.access:
            continue
        for kind in ("c", "b") if rule.kind == "a" else (rule.kind,):
            key = (kind, rule.major, rule.minor)
            have = exceptions.get(key, "")
            if rule.allow != default_allow:
                exceptions[key] = have + "".join(c for c in rule.access if c not in have)
            elif have:
                left = "".join(c for c in have if c not in rule.access)
                if left:
                    exceptions[key] = left
                else:
                    del exceptions[key]
    return default_allow, [Rule(k, ma, mi, "".join(c for c in "rwm" if c in acc), not default_allow)
                           for (k, ma, mi), acc in exceptions.items()]


# -- cgroup v1 --------------------------------------------------------------------------------------------
def apply_v1(path: str, rules) -> None:
    """Writes the rules to a v1 devices cgroup: the default ("a"), then each exception (one write each:
    the kernel takes one rule per write, so one open file serves them all)."""
    default_allow, exceptions = effective(rules)
    default, other = ("devices.allow", "devices.deny") if default_allow else ("devices.deny", "devices.allow")
    _write_each(os.path.join(path, default), ["a"])
    if exceptions:
        _write_each(os.path.join(path, other), [rule.line() for rule in exceptions])


def _write_each(path: str, lines: list) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            for line in lines:
                os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.filename is None:   # the write itself failed: name the file too
            exc.filename = path
        raise


# -- cgroup v2: an eBPF program ---------------------------------------------------------------------------
# struct bpf_cgroup_dev_ctx { u32 access_type /* access << 16 | type */; u32 major; u32 minor; }
_TYPE = {"b": 1, "c": 2}                   # BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR
_ACCESS = {"m": 1, "r": 2, "w": 4}         # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE
# r1 = ctx; r2 = type, r3 = access, r4 = major, r5 = minor
_R0, _R1, _R2, _R3, _R4, _R5 = range(6)


def _insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


def _ldx_w(dst, src, off):      # dst = *(u32 *)(src + off)
    return _insn(0x61, dst, src, off)


def _and32(dst, imm):           # dst = (u32) dst & imm
    return _insn(0x54, dst, imm=imm)


def _rsh32(dst, imm):           # dst = (u32) dst >> imm
    return _insn(0x74, dst, imm=imm)


def _mov32(dst, src):           # dst = (u32) src
    return _insn(0xBC, dst, src)


def _mov_imm(dst, imm):         # dst = imm
    return _insn(0xB7, dst, imm=imm)


def _jne_imm(dst, imm, off):    # if dst != imm: pc += off
    return _insn(0x55, dst, off=off, imm=imm)


def _jne_reg(dst, src, off):    # if dst != src: pc += off
    return _insn(0x5D, dst, src, off)


def _jeq_imm(dst, imm, off):    # if dst == imm: pc += off
    return _insn(0x15, dst, off=off, imm=imm)


_EXIT = _insn(0x95)


def program(rules) -> bytes:
    """The eBPF instructions of a device filter doing what ``rules`` do (runc's devicefilter shape)."""
    default_allow, exceptions = effective(rules)
    out = [_ldx_w(_R2, _R1, 0), _and32(_R2, 0xFFFF),       # type
           _ldx_w(_R3, _R1, 0), _rsh32(_R3, 16),           # access
           _ldx_w(_R4, _R1, 4), _ldx_w(_R5, _R1, 8)]       # major, minor
    for rule in exceptions:
        checks = []   # each a list of instructions whose last one jumps to the next rule
        if rule.kind != "a":
            checks.append([(_jne_imm, _R2, _TYPE[rule.kind])])
        mask = sum(_ACCESS[c] for c in set(rule.access))
        if mask != 7 and rule.allow:
            # An allow covers a request within its access: (access & mask) == access.
            checks.append([(_mov32, _R1, _R3), (_and32, _R1, mask), (_jne_reg, _R1, _R3)])
        elif mask != 7:
            # A deny applies to a request asking for any of its access: (access & mask) != 0.
            checks.append([(_mov32, _R1, _R3), (_and32, _R1, mask), (_jeq_imm, _R1, 0)])
        if rule.major is not None:
            checks.append([(_jne_imm, _R4, rule.major)])
        if rule.minor is not None:
            checks.append([(_jne_imm, _R5, rule.minor)])
        body = [i for check in checks for i in check]
        size = len(body) + 2   # + mov r0, 1; exit
        for n, (fn, *args) in enumerate(body):
            if fn in (_jne_imm, _jne_reg, _jeq_imm):
                out.append(fn(*args, size - n - 1))
            else:
                out.append(fn(*args))
        out += [_mov_imm(_R0, int(rule.allow)), _EXIT]
    out += [_mov_imm(_R0, int(default_allow)), _EXIT]
    return b"".join(out)


def attach_v2(path: str, rules) -> None:
    """Loads the filter for ``rules`` and attaches it to the cgroup2 directory ``path`` (it lives as long
    as the cgroup; ALLOW_MULTI so an ancestor's program, if any, still applies too)."""
    from cni_plugins import syscalls

    code = program(rules)
    try:
        prog = syscalls.bpf_prog_load(syscalls.BPF_PROG_TYPE_CGROUP_DEVICE, code)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EACCES):
            raise
        # Again with the verifier's log, for the message.
        prog = syscalls.bpf_prog_load(syscalls.BPF_PROG_TYPE_CGROUP_DEVICE, code, log_size=1 << 16)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            syscalls.bpf_prog_attach(prog, fd, syscalls.BPF_CGROUP_DEVICE, syscalls.BPF_F_ALLOW_MULTI)
        finally:
            os.close(fd)
    finally:
        os.close(prog)
