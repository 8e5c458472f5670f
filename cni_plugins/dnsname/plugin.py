"""dnsname: containers find each other by name on a network, chained after bridge (containers/dnsname's
options, aardvark-dns's shape).

ADD records the container's name, aliases and short ID (12 characters of CNI_CONTAINERID) with its
addresses in ``<dataDir>/<network>.json`` and makes sure the network's resolver runs in the host network
namespace of the request, on the network's gateway addresses, port 53; the result is the prevResult with
``dns.nameservers`` = the gateways and ``dns.search`` = the domain. Starting it is socket activation: the
plugin binds the sockets and spawns the resolver's watchdog (pynet/dns/supervise.py) with them, and
returns; queries wait in the sockets until the serving process (pynet/dns/server.py) reads them. DEL and
GC remove records; the last one gone kills the resolver (not waited for). The watchdog restarts a serving
process that dies; a resolver found dead as a whole (the watchdog's PID + start time in the pid file) is
started again by the next ADD, DEL, GC or CHECK; it reads the records file, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import sys

from cni_plugins import syscalls
from cni_plugins.errors import CNIError, INTERNAL, INVALID_CONFIG, IO_FAILURE, PLUGIN_NOT_AVAILABLE
from cni_plugins.handles import Handles
from cni_plugins.plugin import Plugin
from cni_plugins.skel import Request
from cni_plugins.results import Result

from pynet.dns import sockets as listening

from . import config as dconf
from . import records as store
from .config import DnsnameConfig

MINIMAL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
QUERY_TIMEOUT = 5.0   # CHECK's query: the first one also waits for the serving process to start

_spawned: list[int] = []   # PIDs of resolvers started from this process, reaped once they end


def _key(container_id: str, ifname: str) -> str:
    return f"{container_id}/{ifname}"


def short_id(container_id: str) -> str:
    """The first 12 characters of the container ID, when they make a DNS label (podman's are hex)."""
    candidate = container_id[:12].lower()
    try:
        return dconf.validate_label("", candidate)
    except CNIError:
        return ""


def _container_ips(prev: Result, ifname: str) -> list:
    """The IPConfigs of the container's ``ifname`` (all of them when the result names no interfaces)."""
    mine = {i for i, iface in enumerate(prev.interfaces) if iface.name == ifname and iface.sandbox}
    return [ip for ip in prev.ips if ip.interface is None or ip.interface in mine or not mine]


def _subnets(prev: Result, ifname: str) -> list[str]:
    """The networks of the container's addresses: the resolver answers names only to clients in them."""
    return sorted({str(ip.address.network) for ip in _container_ips(prev, ifname)})


def _addresses(prev: Result, ifname: str) -> tuple[list[str], list[str]]:
    """The container's addresses on ``ifname`` and their gateways (where the resolver answers)."""
    chosen = _container_ips(prev, ifname)
    ips = [str(ip.address.ip) for ip in chosen]
    gateways: list[str] = []
    for ip in chosen:
        if ip.gateway is not None and str(ip.gateway) not in gateways:
            gateways.append(str(ip.gateway))
    return ips, gateways


# -- the resolver process -----------------------------------------------------------------------------

def resolver_pid(cfg: DnsnameConfig) -> int | None:
    """The PID of the network's running resolver, or None."""
    info = store.read_pid_file(cfg.data_dir, cfg.network)
    pid = info.get("pid")
    return pid if isinstance(pid, int) and syscalls.is_alive(pid, info.get("startTime")) else None


def _start(cfg: DnsnameConfig, listen: list[str], handles: Handles) -> None:
    """Binds port 53 of every address in the host namespace of the request and spawns the watchdog with
    those sockets (pynet/dns/supervise.py), without waiting for it: a query sent once ADD has returned
    waits in the sockets' buffers until the resolver reads it."""
    if importlib.util.find_spec("dns") is None:
        raise CNIError(PLUGIN_NOT_AVAILABLE, "dnsname: dnspython is not installed (the resolver needs it)")
    sockets: list[socket.socket] = []
    try:
        try:
            for address in listen:
                sockets += handles.host.make(listening.listen, address, listening.STALE_WAIT)
        except OSError as exc:
            raise CNIError(INTERNAL, f"the DNS resolver of network {cfg.network!r}: {exc.strerror}") from None
        fds = [sock.fileno() for sock in sockets]
        argv = [sys.executable, "-S", "-m", "pynet.dns.supervise", "--state-dir", cfg.data_dir, "--network",
                cfg.network, "--socket-fds", ",".join(map(str, fds))]
        # -S with our import paths given explicitly: the same modules as this process, also when it was
        # started with -IS (plugin scripts) or from a minimal environment (podman's cleanup).
        env = {"PATH": os.environ.get("PATH") or MINIMAL_PATH,
               "PYTHONPATH": os.pathsep.join(os.path.abspath(p) for p in sys.path if p)}
        # Spawned from inside the host namespace of the request (the child inherits it), in a session of
        # its own (its cwd is made / there). posix_spawn: glibc's vfork-like clone and no Python-level work
        # between fork and exec; dup2 of a descriptor to itself makes it inheritable in the child only.
        log = os.open(store.log_path(cfg.data_dir, cfg.network),
                      os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            actions = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2)]
            actions += [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in fds]
            pid = handles.host.make(os.posix_spawn, sys.executable, argv, env, file_actions=actions, setsid=True)
        finally:
            os.close(log)
            os.close(null)
    finally:
        for sock in sockets:   # the watchdog's now: a copy kept here would hold the port after it stops
            sock.close()
    _spawned.append(pid)
    store.write_pid_file(cfg.data_dir, cfg.network, pid, syscalls.proc_start_time(pid), listen)


def _running(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == 0
    except ChildProcessError:
        return False


def _reap_spawned() -> None:
    """Collects the exit of resolvers this process spawned (a long-lived caller: the daemon)."""
    _spawned[:] = [pid for pid in _spawned if _running(pid)]


def stop_resolver(cfg: DnsnameConfig) -> None:
    """SIGKILL to the watchdog, then to its serving process (which would die with it anyway), not waited
    for: nothing of theirs needs cleaning up, and an ADD right after waits for the port if it must."""
    info = store.read_pid_file(cfg.data_dir, cfg.network)
    for pid, start_time in ((info.get("pid"), info.get("startTime")),
                            (info.get("server"), info.get("serverStartTime"))):
        if syscalls.is_alive(pid, start_time):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(store.pid_path(cfg.data_dir, cfg.network))
    _reap_spawned()


def _ensure_resolver(cfg: DnsnameConfig, data: dict, handles: Handles) -> None:
    """The resolver runs and serves every gateway address of the records (started or restarted if not)."""
    listen = store.listen_addresses(data)
    if resolver_pid(cfg) is not None:
        serving = store.read_pid_file(cfg.data_dir, cfg.network).get("listen") or []
        if set(listen) <= set(serving):
            return
    stop_resolver(cfg)
    _start(cfg, listen, handles)


def _commit(cfg: DnsnameConfig, data: dict, handles: Handles) -> None:
    """Writes the records and brings the resolver in line: running while there are records, gone after."""
    if data["records"]:
        store.save(cfg.data_dir, cfg.network, data)
        _ensure_resolver(cfg, data, handles)
    else:
        stop_resolver(cfg)
        store.remove_network(cfg.data_dir, cfg.network)


# -- verbs --------------------------------------------------------------------------------------------

def add(req: Request, cfg: DnsnameConfig, handles: Handles) -> Result:
    prev = req.require_prev_result("dnsname")
    ips, gateways = _addresses(prev, req.ifname)
    if not ips or not gateways:
        raise CNIError(INVALID_CONFIG, f"dnsname needs an address with a gateway on {req.ifname!r} in prevResult "
                       "(a bridge with isGateway: true): the resolver answers on the gateway")
    record = {"name": cfg.name, "aliases": cfg.aliases, "shortId": short_id(req.container_id), "ips": ips,
              "gateways": gateways, "subnets": _subnets(prev, req.ifname), "upstreams": cfg.container_upstreams}
    try:
        with store.locked(cfg.data_dir):
            data = store.load(cfg.data_dir, cfg.network)
            data.update(domain=cfg.domain, upstreams=cfg.upstreams)
            key = _key(req.container_id, req.ifname)
            data["records"][key] = record
            try:
                _commit(cfg, data, handles)
            except BaseException:
                data["records"].pop(key)   # a failed ADD leaves the network as it was without it
                with contextlib.suppress(Exception):
                    _commit(cfg, data, handles)
                raise
    except OSError as exc:
        raise CNIError(IO_FAILURE, f"dnsname: cannot write records in {cfg.data_dir}: {exc.strerror}") from None
    prev.dns.nameservers = gateways + [ns for ns in prev.dns.nameservers if ns not in gateways]
    prev.dns.search = [cfg.domain] + [s for s in prev.dns.search if s != cfg.domain]
    return prev


def _teardown(cfg: DnsnameConfig, handles: Handles, keep) -> None:
    if not os.path.isdir(cfg.data_dir):
        return   # never used: nothing to remove, and nothing to create
    with store.locked(cfg.data_dir):
        data = store.load(cfg.data_dir, cfg.network)
        if not data["records"] and not os.path.exists(store.pid_path(cfg.data_dir, cfg.network)) \
                and not os.path.exists(store.records_path(cfg.data_dir, cfg.network)):
            return
        data["records"] = {key: rec for key, rec in data["records"].items() if keep(key)}
        _commit(cfg, data, handles)


def delete(req: Request, cfg: DnsnameConfig, handles: Handles) -> None:
    _teardown(cfg, handles, lambda key: key != _key(req.container_id, req.ifname))


def gc(req: Request, cfg: DnsnameConfig, handles: Handles) -> None:
    valid = {_key(cid, ifname) for cid, ifname in req.valid_attachments()}
    _teardown(cfg, handles, lambda key: key in valid)


def query(server: str, name: str, rdtype: str, handles: Handles, timeout: float = QUERY_TIMEOUT):
    """One query to ``server`` port 53 from the host namespace of the request (dnspython)."""
    import dns.message
    import dns.query

    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    sock = handles.host.make(socket.socket, family, socket.SOCK_DGRAM)
    with sock:
        return dns.query.udp(dns.message.make_query(name, rdtype), server, timeout=timeout, sock=sock)


def check(req: Request, cfg: DnsnameConfig, handles: Handles) -> None:
    prev = req.require_prev_result("dnsname")
    ips, gateways = _addresses(prev, req.ifname)
    with store.locked(cfg.data_dir):
        data = store.load(cfg.data_dir, cfg.network)
        record = data["records"].get(_key(req.container_id, req.ifname))
        if record is None:
            raise CNIError(INTERNAL, f"dnsname: no records of container {req.container_id!r} on network "
                           f"{cfg.network!r}")
        if sorted(record.get("ips") or []) != sorted(ips):
            raise CNIError(INTERNAL, f"dnsname: records hold {record.get('ips')}, the container has {ips}")
        _ensure_resolver(cfg, data, handles)
    name = record.get("name") or record.get("shortId")
    if not name:
        return
    fqdn = f"{name}.{data.get('domain') or cfg.domain}."
    for gateway in gateways:
        rdtype = "AAAA" if ":" in ips[0] else "A"
        try:
            reply = query(gateway, fqdn, rdtype, handles)
        except Exception as exc:
            raise CNIError(INTERNAL, f"dnsname: the resolver on {gateway} does not answer: {exc}") from None
        answered = {rd.to_text() for rrset in reply.answer for rd in rrset}
        if ips[0] not in answered:
            raise CNIError(INTERNAL, f"dnsname: the resolver on {gateway} answers {sorted(answered)} for "
                           f"{fqdn}, expected {ips[0]}")


def status(req: Request, cfg: DnsnameConfig, handles: Handles) -> None:
    """Ready when the resolver could run: dnspython importable, the data directory writable."""
    try:
        import dns.message  # noqa: F401
    except ImportError:
        raise CNIError(PLUGIN_NOT_AVAILABLE, "dnsname: dnspython is not installed") from None
    try:
        os.makedirs(cfg.data_dir, exist_ok=True)
    except OSError as exc:
        raise CNIError(PLUGIN_NOT_AVAILABLE, f"dnsname: cannot create dataDir {cfg.data_dir}: {exc.strerror}") from None
    if not os.access(cfg.data_dir, os.W_OK):
        raise CNIError(PLUGIN_NOT_AVAILABLE, f"dnsname: dataDir {cfg.data_dir} is not writable")


PLUGIN = Plugin(name="dnsname", load_config=dconf.parse, add=add, delete=delete, check=check, status=status,
                gc=gc, load_teardown_config=dconf.parse_teardown)
