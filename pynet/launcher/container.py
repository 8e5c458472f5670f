"""Container lifecycle: RunOptions (options.py) -> prepared storage, cgroups and state -> running process
-> cleanup.

One launcher process (the foreground ``pynet run``, or its detached monitor with ``-d``) owns a container
from start to exit: it waits for PID 1 and then undoes everything (network DEL, cgroups, upper dir with
``--rm``). When that launcher dies, the record stays; ``pynet rm -f`` and ``pynet container gc`` redo the
same idempotent cleanup.
"""

from __future__ import annotations

import os
import signal
import time

from cni_plugins import syscalls

from . import cgroups, images, namespaces, network, rootfs, security, stages, state, warm
from . import spec as ocispec
from .options import RunOptions
from .state import Record
from .value_objects import REQUIRED, Fields


class ContainerError(Exception):
    def __init__(self, message: str, exit_code: int = 125):
        super().__init__(message)
        self.exit_code = exit_code


def _env_list_to_dict(items) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            value = os.environ.get(key)
            if value is None:
                continue
        out[key] = value
    return out


def _write_etc(rec_dir: str, hostname: str, added_hosts: list, dns: list | None) -> None:
    with open(os.path.join(rec_dir, "hostname"), "w") as fh:
        fh.write(hostname + "\n")
    write_hosts(rec_dir, hostname, [], added_hosts)
    write_resolv(rec_dir, dns)


def write_hosts(rec_dir: str, hostname: str, addresses: list, added_hosts=()) -> None:
    """/etc/hosts: localhost, the container's own name on its ``addresses``, then the --add-host
    ``added_hosts`` ([name, address] pairs)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{addr}\t{hostname}" for addr in addresses]
    if not addresses:
        lines.append(f"127.0.1.1\t{hostname}")
    lines += [f"{addr}\t{name}" for name, addr in added_hosts]
    # Written in place: the file is bind-mounted into the container, a rename would detach it.
    with open(os.path.join(rec_dir, "hosts"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def write_resolv(rec_dir: str, nameservers: list | None, search: list | None = None) -> None:
    """--dns or the network's DNS; else the host's, minus loopback resolvers (unreachable inside)."""
    lines = []
    if nameservers is None:
        try:
            with open("/etc/resolv.conf") as fh:
                for line in fh:
                    parts = line.split()
                    if parts[:1] == ["nameserver"] and len(parts) > 1 and parts[1].startswith(("127.", "::1")):
                        continue
                    lines.append(line.rstrip("\n"))
        except OSError:
            pass
    else:
        lines = [f"nameserver {ns}" for ns in nameservers]
        if search:
            lines.append("search " + " ".join(search))
    with open(os.path.join(rec_dir, "resolv.conf"), "w") as fh:
        fh.write("\n".join(lines) + ("\n" if lines else ""))


def _resolve_command(opts: RunOptions, config: dict) -> list:
    """Docker's rule: an --entrypoint replaces the image's Entrypoint and, unless empty, its Cmd too; the
    command after IMAGE replaces the Cmd."""
    if opts.entrypoint is None:
        entry = list(config.get("Entrypoint") or [])
    else:
        entry = [opts.entrypoint] if opts.entrypoint else []
    image_cmd = config.get("Cmd") if not opts.entrypoint else None
    cmd = list(opts.command) if opts.command else list(image_cmd or [])
    argv = entry + cmd
    if not argv:
        raise ContainerError("no command given and the image has none")
    return argv


SPEC_FILE = "config.json"   # the container's OCI spec (launcher/spec.py) but its seccomp profile, for `inspect`


class Reserved(Fields):
    """What the daemon's spare launcher made before its container was asked for: the id, its cgroups (no
    limits), a stage 1 already in them, and a warm.WarmAttachment (or None) for the default network;
    ``settle``: a call that waits for that warm attachment while it is still being made (then None)."""
    FIELDS = {"id": REQUIRED, "cgroups": REQUIRED, "stage1": REQUIRED, "warm": None, "settle": None}


def create(opts: RunOptions, reserved: Reserved | None = None) -> tuple[Record, namespaces.ProcessSpec]:
    """Everything before the process: image, storage, cgroups, state record. Undone on failure."""
    if reserved is not None and opts.limits.any():
        raise ContainerError("a reserved container has no limits")
    if opts.name and state.name_taken(opts.name):
        raise ContainerError(f"container name {opts.name!r} is already in use")
    try:
        caps = security.resolve_caps(opts.cap_add, opts.cap_drop)
    except security.SecurityError as exc:
        raise ContainerError(str(exc)) from None
    if opts.rootfs_dir:
        if not os.path.isdir(opts.rootfs_dir):
            raise ContainerError(f"--rootfs {opts.rootfs_dir}: not a directory")
        config = {"Env": [images.DEFAULT_PATH], "Cmd": ["sh"]}
        lowers, layer_ids, image_name = [os.path.realpath(opts.rootfs_dir)], [], None
    else:
        try:
            image = images.ensure(opts.image or images.DEFAULT_IMAGE)
        except images.ImageError as exc:
            raise ContainerError(str(exc)) from None
        config, layer_ids, image_name = image["config"], image["layers"], image["name"]
        lowers = [images.layer_path(layer) for layer in layer_ids]
    userns = (opts.userns_base, opts.userns_size) if opts.userns else None
    argv = _resolve_command(opts, config)
    user, rlimits, seccomp = _process_security(opts, config, lowers, caps)
    env = {"PATH": images.DEFAULT_PATH.split("=", 1)[1]}
    env.update(_env_list_to_dict(config.get("Env") or []))
    cid = reserved.id if reserved is not None else state.new_id()
    hostname = opts.hostname or cid[:12]
    env["HOSTNAME"] = hostname
    if opts.tty:
        env["TERM"] = "xterm"   # Docker's, for -t (an -e TERM= below still wins)
    env.update(_env_list_to_dict(opts.env))
    env.setdefault("HOME", user.home)
    cwd = opts.workdir or config.get("WorkingDir") or "/"

    rec = Record.create({
        "id": cid, "name": opts.name or f"pynet-{cid[:12]}", "image": image_name or opts.rootfs_dir,
        "layers": layer_ids, "command": argv, "created": state.now(), "status": "created",
        "hostname": hostname, "rm": opts.rm, "userns": list(userns) if userns else None,
        "caps": caps, "seccomp": opts.seccomp, "no_new_privs": opts.no_new_privs, "env": env, "cwd": cwd,
        "storage": state.storage_dir(cid), "read_only": opts.read_only, "detached": opts.detach,
        "monitor_pid": os.getpid(), "monitor_start": syscalls.proc_start_time(os.getpid()),
        "limits": vars(opts.limits), "network": {**opts.net.to_record(), "dns": list(opts.dns)},
        "user": vars(user), "rlimits": rlimits, "devices": [vars(d) for d in opts.devices],
        "tmpfs": [path for path, _flags, _data in opts.tmpfs], "add_hosts": [list(h) for h in opts.add_hosts],
        **({"restart_policy": {"name": opts.restart, "maximum_retry_count": opts.restart_retries},
            "restart_count": 0} if opts.restart != "no" else {}),
        **({"seccomp_profile": seccomp} if isinstance(seccomp, dict) else {}),
        **({"cgroups": reserved.cgroups.paths} if reserved is not None else {}),
    })
    try:
        storage = rec["storage"]
        upper, work = os.path.join(storage, "upper"), os.path.join(storage, "work")
        if userns and opts.rootfs_dir:
            # A private copy owned by the mapped range (image layers have shared shifted copies instead).
            images.copy_tree(lowers[0], os.path.join(storage, "rootfs"), shift=userns[0])
            lowers = [os.path.join(storage, "rootfs")]
        elif userns:
            lowers = images.shifted_layers(layer_ids, userns[0])
        for d in (upper, work):
            os.makedirs(d, mode=0o755)
            if userns:
                os.chown(d, userns[0], userns[0])
        _write_etc(rec.dir, hostname, opts.add_hosts, opts.dns or None)
        if reserved is None:
            cg = cgroups.create(cid, opts.limits, opts.devices)
            rec.update(cgroups=cg.paths)
    except BaseException as exc:
        _undo(rec)
        if isinstance(exc, (cgroups.CgroupError, OSError, images.ImageError)):
            raise ContainerError(str(exc)) from None
        raise
    new_net = opts.net.mode != "host"
    oci = ocispec.build(
        argv=argv, env=env, cwd=cwd, hostname=hostname, caps=caps, user=user, rlimits=rlimits,
        nnp=opts.no_new_privs, etc_dir=rec.dir, readonly=opts.read_only, new_net=new_net, userns=userns,
        volumes=opts.volumes, tmpfs=opts.tmpfs, devices=opts.devices, terminal=opts.tty)
    try:
        ocispec.check(oci)
    except ValueError as exc:
        _undo(rec)
        raise ContainerError(str(exc)) from None
    spec = namespaces.ProcessSpec(oci=oci, caps=caps, seccomp=seccomp, init=opts.init, userns=userns,
                                  new_net=new_net, cgroup_mounts=cgroups.container_mounts(),
                                  overlay={"lowerdirs": list(reversed(lowers)), "upper": upper, "work": work},
                                  device_hosts={d.path: d.host for d in opts.devices})
    return rec, spec


def _process_security(opts: RunOptions, config: dict, lowers: list, caps: list) -> tuple:
    """(security.User, rlimits, seccomp profile) of a run: --user or the image's User resolved in the
    image's files (``lowers``: its layer directories, bottom first), the --ulimit values over the
    defaults, and the profile ("default", "unconfined" or the --security-opt file, loaded)."""
    from . import seccomp_profile, users

    try:
        user = users.resolve(opts.user if opts.user is not None else config.get("User"), lowers[::-1],
                             opts.group_add)
        rlimits = security.resolve_rlimits(opts.ulimits)
        seccomp = opts.seccomp if opts.seccomp in ("default", "unconfined") else seccomp_profile.load(opts.seccomp)
    except ValueError as exc:   # UserError, SecurityError, ProfileError
        raise ContainerError(str(exc)) from None
    return user, rlimits, seccomp


def start(rec: Record, spec: namespaces.ProcessSpec, dns: list | None = None,
          reserved: Reserved | None = None, undo: bool = True) -> int:
    """Starts PID 1 of a created container; its host PID. A failure undoes the container (``undo``) or
    leaves it to finish()."""
    cg = cgroups.from_paths(rec["cgroups"])
    join = cg.join if reserved is None else (lambda _pid: None)
    needs_network = network.needs_attach(rec)
    if reserved is not None and reserved.settle is not None and warm.may_fit(rec.get("network")):
        reserved.settle()   # a run that will not adopt it does not wait for it
    adopted = reserved.warm if reserved is not None and warm.fits(reserved.warm, rec.get("network")) else None

    def running(pid: int) -> dict:
        return dict(pid=pid, pid_start=syscalls.proc_start_time(pid), status="running", started=state.now(),
                    namespaces={n: syscalls.ns_inode(pid, n) for n in syscalls.NAMESPACES})

    def before_exec(pid: int) -> None:
        if not needs_network:
            return   # nothing to wait for: the record is written while the command already runs
        now_running = running(pid)
        attached = network.attach(rec, pid, adopted)
        # One write of the record for both (a failed attach undoes the container, record included).
        rec.update(**now_running, **({"network": attached} if attached else {}))
        if attached:
            addrs = network.addresses(attached)
            write_hosts(rec.dir, rec["hostname"], addrs, rec.get("add_hosts") or ())
            # --dns on a network with a resolver: that resolver forwards to them (network.attach_cni)
            if network.dns_servers(attached) and (dns is None or attached.get("dns_forwarded")):
                write_resolv(rec.dir, network.dns_servers(attached), network.dns_search(attached))

    def idle() -> None:
        # Imports needed later, done while the stages build the container (the launcher would only wait);
        # and the spec kept for `inspect`.
        try:
            ocispec.save(spec.oci, rec.file(SPEC_FILE))
        except OSError:
            pass
        if needs_network:
            network.preload()
        if rec.get("rm"):
            import shutil  # noqa: F401 - for the removal at exit (~2 ms)

    try:
        pid = namespaces.start(spec, join, before_exec, idle, reserved.stage1 if reserved is not None else None,
                               adopted is not None)
        if not needs_network:
            rec.update(**running(pid))
        return pid
    except BaseException as exc:
        if undo:
            _undo(rec)
        if isinstance(exc, stages.LaunchError):
            raise ContainerError(str(exc), exc.exit_code) from None
        if isinstance(exc, Exception) and not isinstance(exc, ContainerError):
            raise ContainerError(str(exc)) from None   # network (CNIError, NetworkError), OSError
        raise


# -- --restart: the detached monitor (supervise.py) starts PID 1 again while the policy says so -------
STOP_REQUESTED = "stop-requested"   # a file in the record's dir: `stop`/`rm` ended the restart loop


def should_restart(rec: Record, code: int) -> bool:
    """Whether the --restart policy restarts a container whose PID 1 exited with ``code``."""
    policy = rec.get("restart_policy") or {}
    name = policy.get("name", "no")
    if name == "no" or stop_requested(rec):
        return False
    if name == "on-failure":
        limit = policy.get("maximum_retry_count")
        return code != 0 and (limit is None or rec.get("restart_count", 0) < limit)
    return True


def stop_requested(rec: Record) -> bool:
    return os.path.exists(rec.file(STOP_REQUESTED))


def request_stop(rec: Record) -> None:
    """Ends the restart loop of ``rec`` (before its PID 1 is signalled, so the monitor sees it)."""
    if rec.get("restart_policy"):
        with open(rec.file(STOP_REQUESTED), "w"):
            pass


def prepare_restart(rec: Record, code: int) -> None:
    """Between two runs of PID 1: the old netns's network DEL (the next start attaches the new one), and
    the record says "restarting" with the last exit code and one more restart."""
    network.detach(rec)
    rec.update(status="restarting", exit_code=code, restart_count=rec.get("restart_count", 0) + 1)


def _undo(rec: Record) -> None:
    """A failed create/start leaves nothing; if even that fails the record stays for `rm -f`/gc."""
    try:
        cleanup(rec, remove_all=True)
    except ContainerError:
        pass


def wait(rec: Record, pid: int) -> int:
    """Waits for PID 1 (a child of this subreaper launcher), reaping anything else re-parented here."""
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        except InterruptedError:
            continue
        if got == pid:
            return stages.exit_status(status)


def finish(rec: Record, code: int, deferred: list | None = None) -> None:
    """After PID 1 exited: record it, then clean up (everything with --rm; ``deferred``: see cleanup)."""
    cg = cgroups.from_paths(rec.get("cgroups") or {})
    oom = cg.oom_killed() if rec.get("cgroups") else False
    rec = rec.reload()
    outcome = {"exit_code": code, "finished": state.now(), "oom_killed": oom}
    if not rec.get("rm"):
        # "stopping" until the teardown is done, so "exited" means nothing is left but the record. A --rm
        # record is deleted by the teardown; only a failed one keeps it (with the outcome, below).
        rec.update(status="stopping", **outcome)
    try:
        cleanup(rec, remove_all=bool(rec.get("rm")), deferred=deferred)
    finally:
        if os.path.exists(rec.path):
            rec.update(status="exited", **outcome)


def cleanup(rec: Record, remove_all: bool, force: bool = False, deferred: list | None = None) -> None:
    """Idempotent teardown: network DEL, cgroups, then (remove_all) upper dir and the record. A failed
    step keeps the record (so `rm -f`/gc can retry) unless ``force``. With a ``deferred`` list (and
    remove_all), the network DEL and the container's directories, set aside (renamed: gone from every
    listing), go into it for the caller to do once its client has the exit code (run_deferred); gc
    redoes what a crash left."""
    errors = []
    late_detach = deferred is not None and remove_all and not force and network.needs_attach(rec)
    if late_detach:
        # PID 1 is gone, its netns only pinned: the DEL (a veth deletion waits ~25 ms for the kernel) runs
        # after the client has its exit code. A run that needs the ports/address freed first waits for it
        # (network.attach_cni: wait_pending_detaches); the set-aside record keeps what gc needs to redo it.
        deferred.append(network.LateDetach(rec))
    else:
        try:
            network.detach(rec)
        except Exception as exc:  # noqa: BLE001 - keep tearing down the rest
            errors.append(f"network: {exc}")
    if rec.get("cgroups"):
        try:
            cgroups.from_paths(rec["cgroups"]).remove()
        except cgroups.CgroupError as exc:
            errors.append(str(exc))
    if remove_all and (force or not errors):
        dirs = [rec.get("storage") or state.storage_dir(rec.id), rec.dir]
        if deferred is not None:
            deferred += [p for p in map(state.set_aside, dirs) if p]
        else:
            remove_trees(dirs)
    elif errors and os.path.exists(rec.path):
        rec.update(cleanup_errors=errors)
    if errors:
        raise ContainerError("; ".join(errors))


def remove_trees(paths) -> None:
    import shutil   # here: ~1.5 ms at start-up, and only removals need it

    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def run_deferred(deferred: list) -> None:
    """What cleanup(deferred=...) left for after the reply, in order: the network DEL, then the trees
    set aside (a record stays on disk, hidden, until its network is detached)."""
    for item in deferred:
        if callable(item):
            if not item():
                return   # the DEL failed: the set-aside record stays for gc to retry it
        else:
            remove_trees([item])


# -- operations on existing containers ---------------------------------------------------------------
def signal_container(rec: Record, sig: int) -> None:
    if not rec.running():
        raise ContainerError(f"container {rec.id[:12]} is not running")
    os.kill(rec["pid"], sig)


def _wait_gone(rec: Record, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not rec.running():
            return True
        time.sleep(0.02)
    return not rec.running()


def _wait_monitor(rec: Record, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while rec.monitor_alive() and time.monotonic() < deadline:
        time.sleep(0.02)


def _restart_loop_alive(rec: Record) -> bool:
    return bool(rec.get("restart_policy")) and rec.monitor_alive()


def stop(rec: Record, timeout: float = 10.0) -> None:
    if _restart_loop_alive(rec):
        request_stop(rec)
    elif not rec.running():
        return
    if rec.running():
        os.kill(rec["pid"], signal.SIGTERM)
        if not _wait_gone(rec, timeout):
            os.kill(rec["pid"], signal.SIGKILL)
            _wait_gone(rec, 5)
    _wait_monitor(rec, 10)


def remove(rec: Record, force: bool = False) -> None:
    if rec.running() or _restart_loop_alive(rec):
        if not force:
            state = "running" if rec.running() else "restarting"
            raise ContainerError(f"container {rec.id[:12]} is {state} (stop it or use -f)")
        request_stop(rec)
        if rec.running():
            os.kill(rec["pid"], signal.SIGKILL)
            _wait_gone(rec, 5)
    _wait_monitor(rec, 10)
    rec = rec.reload()
    if not os.path.exists(rec.path):
        return   # its monitor removed it (--rm)
    try:
        cleanup(rec, remove_all=True, force=force)
    except ContainerError:
        if not force:
            raise


def gc() -> list[str]:
    """Cleans records whose launcher died (status "dead"), and removes exited --rm leftovers."""
    cleaned = []
    for rec in state.all_records():
        st = rec.status()
        if st == "dead" or (st == "exited" and rec.get("rm")):
            try:
                remove(rec, force=True)
            except ContainerError:
                continue
            cleaned.append(rec.id)
    leftovers = state.set_aside_leftovers()
    for path in leftovers:
        _detach_set_aside(path)
    remove_trees(leftovers)
    return cleaned


def _detach_set_aside(path: str) -> None:
    """The network DEL a launcher deferred (cleanup) and did not live to run, from its set-aside record,
    and its cgroups if they are still there; both are idempotent, so one still running it does no harm."""
    import json

    try:
        with open(os.path.join(path, "state.json")) as fh:
            rec = Record(json.load(fh))
    except (OSError, ValueError):
        return   # a storage dir, or no record
    if rec.monitor_alive():
        return   # its launcher is still at it
    try:
        network.detach(rec)
    except Exception:  # noqa: BLE001 - the tree goes anyway; the runner's gc finds what is left
        pass
    if rec.get("cgroups"):
        try:
            cgroups.from_paths(rec["cgroups"]).remove()
        except cgroups.CgroupError:
            pass


def exec_in(rec: Record, argv: list, env: list, workdir: str | None, tty: bool = False,
            interactive: bool = True) -> int:
    """``argv`` in the running container ``rec`` (with ``tty``: on a pty of its own, relayed here)."""
    if not rec.running():
        raise ContainerError(f"container {rec.id[:12]} is not running")
    full_env = dict(rec.get("env") or {})
    full_env.update(_env_list_to_dict(env))
    user = security.User(**rec["user"]) if rec.get("user") else None
    process = ocispec.process_of(argv, full_env, workdir or rec.get("cwd") or "/", rec["caps"], user,
                                 rec.get("rlimits"), rec.get("no_new_privs", True), tty)
    spec = namespaces.ProcessSpec(oci={"process": process}, caps=rec["caps"], new_net=False,
                                  seccomp=rec.get("seccomp_profile") or rec.get("seccomp", "default"))
    relay = None
    if tty:
        from . import terminal

        console = terminal.Console()
        spec.console, spec.console_size = console.fd, terminal.window_size()
        relay = lambda child, wait: terminal.relay(console.receive(), child, interactive, wait)  # noqa: E731
    cg = cgroups.from_paths(rec.get("cgroups") or {})
    try:
        return namespaces.join(rec["pid"], spec, cg.join, relay)
    except stages.LaunchError as exc:
        raise ContainerError(str(exc), exc.exit_code) from None


def inspect(rec: Record) -> dict:
    data = dict(rec.data)
    data["state"] = rec.status()
    pid = rec.get("pid")
    if rec.running():
        data["namespaces"] = {n: syscalls.ns_inode(pid, n) for n in syscalls.NAMESPACES}
        data["host_namespaces"] = {n: syscalls.ns_inode("self", n) for n in syscalls.NAMESPACES}
        data["mounts"] = rootfs.mounts_of(pid)
        data["stats"] = cgroups.from_paths(rec.get("cgroups") or {}).stats()
    data.pop("seccomp_profile", None)
    data["spec"] = saved = ocispec.read(rec.file(SPEC_FILE))
    if saved:
        try:
            data["spec"] = ocispec.with_seccomp(saved, rec.get("seccomp_profile") or rec.get("seccomp", "default"))
        except ValueError:
            pass   # the default profile unreadable now: the spec as kept
    data["security"] = {"capabilities": rec.get("caps"), "seccomp": rec.get("seccomp"),
                        "no_new_privs": rec.get("no_new_privs"), "user": rec.get("user"),
                        "rlimits": rec.get("rlimits"), **security.lsm_status()}
    return data
