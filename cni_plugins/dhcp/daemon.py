"""`dhcp daemon`: the long-running DHCP client the dhcp IPAM plugin talks to (the reference's daemon mode).

It must be running before containers use the plugin (the operator starts it, as with the reference; it is
never started on demand). Flags as the reference's, Go style (``-flag value``, ``-flag=value``, ``--flag``):
``-socketpath`` (default /run/cni/dhcp.sock), ``-hostprefix`` (prepended to the socket path and to a
CNI_NETNS the daemon has to open itself), ``-pidfile``, ``-broadcast`` (set the BROADCAST flag),
``-timeout`` (longest wait for an answer before resending, 10s), ``-resendmax`` (longest delay between
resends, 62s), ``-resendtimeout`` (an exchange gives up after this, 208s). Durations as Go's (``1m30s``).

One lease per (container, network, interface): acquired in the request's thread, then kept by a thread of
its own (cni_plugins/dhcp/lease.py) until DEL releases it (DHCPRELEASE), the interface disappears or the
lease runs out. The daemon holds the container's network namespace by the fd the plugin passed (which
keeps the namespace alive until DEL or GC ends the lease, as the reference's thread inside it does); every
socket of a lease is made inside it once (cni_plugins/dhcp/client.py), no thread stays in it.
SIGTERM or SIGINT stop the daemon without releasing (the containers keep their addresses, as with the
reference); each lease is written down (cni_plugins/dhcp/store.py), so the next daemon on the same socket
takes them over where the container's CNI_NETNS still opens to the same namespace (the reference's
forgets them: no renewal, no release).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import socketserver
import sys
import threading
import time

from cni_plugins.errors import CNIError, INTERNAL, INVALID_CONFIG, UNKNOWN_CONTAINER

from . import client as dhcp_client
from . import lease as dhcp_lease
from . import message, rpc
from . import store as lease_store
from .config import DEFAULT_SOCKET

LINK_CHECK_INTERVAL = 30.0   # while bound, how often a lease looks whether its interface is still there
RELEASE_CARRIER_WAIT = 2.0   # how long a release waits for the carrier of a link it had to set up
RELEASE_REPEATS = (0.05, 0.2, 0.5)   # then sends it again after these pauses


def log(text: str) -> None:
    sys.stderr.write(time.strftime("%Y/%m/%d %H:%M:%S ") + text + "\n")
    sys.stderr.flush()


# -- flags ------------------------------------------------------------------------------------------------------
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds: ``10s``, ``1m30s``, ``500ms``, ``0``."""
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not text:
        raise ValueError("invalid duration ''")
    return total


FLAGS = {"pidfile": str, "hostprefix": str, "socketpath": str, "broadcast": bool, "timeout": parse_duration,
         "resendmax": parse_duration, "resendtimeout": parse_duration}
DEFAULTS = {"pidfile": "", "hostprefix": "", "socketpath": "", "broadcast": False, "timeout": 10.0,
            "resendmax": 62.0, "resendtimeout": 208.0}


def parse_flags(argv: list[str]) -> dict:
    """The daemon's flags the way Go's flag package reads them; ValueError naming the bad one."""
    out = dict(DEFAULTS)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            break
        if not arg.startswith("-") or arg in ("-",):
            raise ValueError(f"unexpected argument {arg!r}")
        name, eq, value = arg.lstrip("-").partition("=")
        if name in ("h", "help"):
            raise ValueError("usage")
        kind = FLAGS.get(name)
        if kind is None:
            raise ValueError(f"flag provided but not defined: -{name}")
        if kind is bool:
            if eq and value.lower() not in ("1", "0", "t", "f", "true", "false"):
                raise ValueError(f"invalid boolean value {value!r} for -{name}")
            out[name] = not eq or value.lower() in ("1", "t", "true")
        else:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise ValueError(f"flag needs an argument: -{name}")
                value = argv[i]
            try:
                out[name] = kind(value)
            except ValueError:
                raise ValueError(f"invalid value {value!r} for flag -{name}") from None
        i += 1
    return out


# -- leases -----------------------------------------------------------------------------------------------------
class Lease:
    """One acquired lease and the thread that keeps it."""

    def __init__(self, args: dict, netns_fd: int, timing: dhcp_client.Timing, store_dir: str | None = None,
                 bring_up: bool = True):
        self.args = args
        self.store_dir = store_dir
        self.client_id = args["clientID"]
        self.network = args.get("network", "")
        self.container_id = args.get("containerID", "")
        self.ifname = args["ifname"]
        self.netns_fd = netns_fd
        self.stop_event = threading.Event()
        self.release_on_stop = True
        self.ended = threading.Event()
        self.state = "acquiring"
        provided = {int(code): bytes.fromhex(value) for code, value in (args.get("options") or {}).items()}
        options = dhcp_client.client_options(self.client_id, provided)
        request = [int(code) for code in args.get("request", [])]
        self.iface = dhcp_client.Interface(netns_fd, self.ifname, bring_up)
        self.client = dhcp_client.Client(self.iface, options, request, timing, cancel=self.stop_event)
        self.ack: message.Message | None = None
        self.server_mac = b""
        self.thread: threading.Thread | None = None
        self.machine: dhcp_lease.Maintainer | None = None

    def acquire(self) -> None:
        if self.iface.was_down:
            log(f"{self.client_id}: link {self.ifname!r} was down, set it up")
        log(f"{self.client_id}: acquiring lease")
        self.ack, self.server_mac = self.client.acquire()
        self.timers = dhcp_lease.Timers.from_ack(self.ack, time.monotonic())
        self.state = dhcp_lease.BOUND
        log(f"{self.client_id}: lease of {self.ack.yiaddr} acquired from {self.ack.server_id}, "
            f"renewal in {self.timers.renew_at - time.monotonic():.0f}s")
        self.persist()

    # -- what a restarted daemon takes over (cni_plugins/dhcp/store.py) ------------------------------------
    def persist(self) -> None:
        if self.store_dir is None:
            return
        offset = time.time() - time.monotonic()
        record = {"args": self.args, "netns": lease_store.netns_identity(self.netns_fd), "ack": self.ack.encode().hex(),
                  "serverMAC": self.server_mac.hex(),
                  "timers": [t + offset for t in (self.timers.renew_at, self.timers.rebind_at, self.timers.expire_at)]}
        try:
            lease_store.save(self.store_dir, self.client_id, record)
        except OSError as exc:
            log(f"{self.client_id}: cannot write the lease down for a restarted daemon: {exc}")

    def restore(self, record: dict) -> None:
        self.ack = message.Message.decode(bytes.fromhex(record["ack"]))
        self.server_mac = bytes.fromhex(record["serverMAC"])
        offset = time.monotonic() - time.time()
        self.timers = dhcp_lease.Timers(*(float(t) + offset for t in record["timers"]))
        self.state = dhcp_lease.BOUND

    def result(self):
        assert self.ack is not None
        return dhcp_lease.result_of(self.ack)

    def start(self, on_end) -> None:
        self.thread = threading.Thread(target=self._maintain, args=(on_end,), name=f"lease {self.client_id}",
                                       daemon=True)
        self.thread.start()

    def _extend(self, broadcast: bool):
        def attempt(deadline: float):
            try:
                ack, mac = self.client.extend(self.ack, self.server_mac, deadline, broadcast)
            except (dhcp_client.ExchangeFailed, OSError) as exc:
                log(f"{self.client_id}: {'rebinding' if broadcast else 'renewal'} failed: {exc}")
                return None
            self.ack, self.server_mac = ack, mac
            self.timers = dhcp_lease.Timers.from_ack(ack, time.monotonic())   # as the maintainer computes them
            log(f"{self.client_id}: lease of {ack.yiaddr} {'rebound' if broadcast else 'renewed'}")
            self.persist()
            return ack
        return attempt

    def _wait(self, seconds: float) -> bool:
        return self.stop_event.wait(max(min(seconds, LINK_CHECK_INTERVAL), 0))

    def _expired(self) -> None:
        log(f"{self.client_id}: lease expired, bringing interface {self.ifname!r} down")
        try:
            self.iface.set_up(False)
        except OSError as exc:
            log(f"{self.client_id}: failed to bring {self.ifname!r} down: {exc}")

    def _maintain(self, on_end) -> None:
        machine = dhcp_lease.Maintainer(self.timers, time.monotonic, self._wait, self._extend(False),
                                        self._extend(True), self.iface.present, self._expired,
                                        log=lambda text: log(f"{self.client_id}: {text}"))
        self.machine = machine
        try:
            self.state = machine.run()
            if self.state == dhcp_lease.STOPPED and self.release_on_stop:
                self._release()
            elif self.state == dhcp_lease.GONE:
                log(f"{self.client_id}: interface {self.ifname!r} no longer exists, ending lease maintenance")
        except Exception as exc:   # a bug must not kill the daemon
            log(f"{self.client_id}: lease maintenance failed: {exc.__class__.__name__}: {exc}")
        finally:
            if self.release_on_stop and self.store_dir is not None:   # not a daemon shutting down
                lease_store.remove(self.store_dir, self.client_id)
            self.close()
            on_end(self)
            self.ended.set()

    def _release(self) -> None:
        """DHCPRELEASE through the container interface. A plugin that sets its link down before the IPAM DEL
        (pynet's bridge: the address must not stay live on two ports) gets it up for the moment of the send
        and down again; a link already gone cannot carry it (the lease then ends at the server in time)."""
        log(f"{self.client_id}: releasing lease of {self.ack.yiaddr}")
        if not self.iface.present():
            log(f"{self.client_id}: interface {self.ifname!r} is gone, cannot send DHCPRELEASE")
            return
        try:
            was_down = not self.iface.is_up()
            if was_down:
                self.iface.set_up()
                self.iface.wait_running(RELEASE_CARRIER_WAIT)
            try:
                self.client.release(self.ack, self.server_mac)
                # A bridge port the link is plugged into may forward only a moment after the carrier shows
                # (its own link watch): the release is sent again then (a server ignores a repeated one).
                for delay in RELEASE_REPEATS if was_down else ():
                    time.sleep(delay)
                    self.client.release(self.ack, self.server_mac)
            finally:
                if was_down:
                    self.iface.set_up(False)
        except OSError as exc:
            log(f"{self.client_id}: failed to send DHCPRELEASE: {exc}")

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout)

    def close(self) -> None:
        self.iface.close()
        dhcp_client.close_quietly(self.netns_fd)
        self.netns_fd = -1

    def describe(self) -> dict:
        machine = self.machine
        return {"clientID": self.client_id, "state": self.state, "address": str(self.ack.yiaddr) if self.ack else "",
                "renewals": machine.renewals if machine is not None else 0}


class Daemon:
    def __init__(self, timing: dhcp_client.Timing, host_prefix: str = "", store_dir: str | None = None):
        self.timing = timing
        self.host_prefix = host_prefix
        self.store_dir = store_dir
        self.leases: dict[str, Lease] = {}
        self.lock = threading.Lock()
        # One request per client ID at a time (an ADD racing its DEL, a retried ADD).
        self._client_locks: dict[str, threading.Lock] = {}

    def _client_lock(self, client_id: str) -> threading.Lock:
        with self.lock:
            return self._client_locks.setdefault(client_id, threading.Lock())

    def _netns_fd(self, args: dict, fds: list[int]) -> int:
        if fds:
            return fds.pop(0)
        path = args.get("netns") or ""
        if not path:
            raise CNIError(UNKNOWN_CONTAINER, "no network namespace given")
        path = self.host_prefix + os.path.abspath(path)
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise CNIError(UNKNOWN_CONTAINER, f"cannot open network namespace {path!r}: {exc.strerror}") from None

    def _forget(self, lease: Lease) -> None:
        with self.lock:
            if self.leases.get(lease.client_id) is lease:
                del self.leases[lease.client_id]

    def allocate(self, args: dict, fds: list[int]) -> dict:
        client_id = _string(args, "clientID")
        _string(args, "ifname")
        with self._client_lock(client_id):
            with self.lock:
                existing = self.leases.get(client_id)
            if existing is not None and not existing.ended.is_set():
                return {"result": existing.result().to_dict("1.1.0")}
            netns_fd = self._netns_fd(args, fds)
            try:
                lease = Lease(args, netns_fd, self.timing, self.store_dir)
            except dhcp_client.ExchangeFailed as exc:
                dhcp_client.close_quietly(netns_fd)
                raise CNIError(INTERNAL, str(exc)) from None
            except BaseException:
                dhcp_client.close_quietly(netns_fd)
                raise
            try:
                lease.acquire()
                result = lease.result()
            except BaseException as exc:
                lease.close()
                if isinstance(exc, dhcp_client.ExchangeFailed):
                    raise CNIError(INTERNAL, f"{client_id}: {exc}") from None
                raise
            with self.lock:
                self.leases[client_id] = lease
            lease.start(self._forget)
            return {"result": result.to_dict("1.1.0")}

    def release(self, args: dict, fds: list[int]) -> dict:
        client_id = _string(args, "clientID")
        with self._client_lock(client_id):
            with self.lock:
                lease = self.leases.pop(client_id, None)
            if lease is not None:
                lease.stop()
        return {}

    def check(self, args: dict, fds: list[int]) -> dict:
        client_id = _string(args, "clientID")
        with self.lock:
            lease = self.leases.get(client_id)
        if lease is None or lease.ended.is_set():
            raise CNIError(INTERNAL, f"no DHCP lease held for {client_id}")
        return {"result": lease.result().to_dict("1.1.0"), "lease": lease.describe()}

    def gc(self, args: dict, fds: list[int]) -> dict:
        network = _string(args, "network")
        keep = set(args.get("keep") or [])
        with self.lock:
            stale = [lease for lease in self.leases.values() if lease.network == network and lease.client_id not in keep]
        for lease in stale:
            self.release({"clientID": lease.client_id}, [])
        return {"released": sorted(lease.client_id for lease in stale)}

    def status(self, args: dict, fds: list[int]) -> dict:
        with self.lock:
            return {"leases": [lease.describe() for lease in self.leases.values()]}

    def handle(self, method: str, args: dict, fds: list[int]) -> tuple[int, dict]:
        verbs = {rpc.ALLOCATE: self.allocate, rpc.RELEASE: self.release, rpc.CHECK: self.check, rpc.GC: self.gc,
                 rpc.STATUS: self.status}
        try:
            verb = verbs.get(method)
            if verb is None:
                raise CNIError(INVALID_CONFIG, f"unknown method {method!r}")
            return 0, verb(args, fds)
        except CNIError as err:
            return err.code, {"msg": err.msg, "details": err.details}
        except Exception as exc:
            log(f"{method}: {exc.__class__.__name__}: {exc}")
            return INTERNAL, {"msg": f"{exc.__class__.__name__}: {exc}"}
        finally:
            for fd in fds:
                dhcp_client.close_quietly(fd)

    def resume(self) -> None:
        """Takes over the leases a previous daemon wrote down (cni_plugins/dhcp/store.py)."""
        if self.store_dir is None:
            return
        for path, record in lease_store.load_all(self.store_dir):
            try:
                lease = self._resume(record)
            except Exception as exc:
                lease = None
                log(f"not taking over the lease in {path}: {exc}")
            if lease is None:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def _resume(self, record: dict | None) -> Lease | None:
        if record is None:
            raise ValueError("unreadable")
        args = record["args"]
        fd = self._netns_fd(args, [])
        try:
            if lease_store.netns_identity(fd) != list(record["netns"]):
                raise ValueError(f"{args.get('netns')!r} is another network namespace now")
            lease = Lease(args, fd, self.timing, self.store_dir, bring_up=False)
        except BaseException:
            dhcp_client.close_quietly(fd)
            raise
        try:
            lease.restore(record)
            if lease.timers.expire_at <= time.monotonic():
                raise ValueError("the lease has expired")
        except BaseException:
            lease.close()
            raise
        with self.lock:
            self.leases[lease.client_id] = lease
        lease.start(self._forget)
        log(f"{lease.client_id}: took over the lease of {lease.ack.yiaddr}")
        return lease

    def stop_all(self) -> None:
        """Ends every lease's maintenance without releasing (a daemon shutting down)."""
        with self.lock:
            leases = list(self.leases.values())
        for lease in leases:
            lease.release_on_stop = False
            lease.stop_event.set()


def _string(args: dict, key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise CNIError(INVALID_CONFIG, f"invalid {key} {value!r}: expected a non-empty string")
    return value


# -- the server -------------------------------------------------------------------------------------------------
class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = False


def _listen(path: str) -> None:
    """The listening socket; a stale socket file (nobody listening) is replaced, a live daemon refused."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    else:
        raise SystemExit(f"dhcp daemon: another daemon is listening on {path}")
    finally:
        probe.close()


def serve(flags: dict) -> int:
    timing = dhcp_client.Timing(flags["timeout"], flags["resendmax"], flags["resendtimeout"], flags["broadcast"])
    path = flags["hostprefix"] + (flags["socketpath"] or DEFAULT_SOCKET)
    daemon = Daemon(timing, flags["hostprefix"], lease_store.directory_for(path))
    pidfile = flags["pidfile"]
    if pidfile and not os.path.isabs(pidfile):
        log(f"Error writing pidfile {pidfile!r}: path not absolute")
        return 1
    _listen(path)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            try:
                method, args, fds = rpc.receive(self.request)
            except EOFError:
                return   # a connection that only probed whether a daemon listens
            except (ValueError, ConnectionError, OSError) as exc:
                log(f"bad request: {exc}")
                return
            code, body = daemon.handle(method, args, fds)
            try:
                rpc.reply(self.request, code, body)
            except OSError:
                pass

    old_umask = os.umask(0o177)   # the socket: root only, as the reference's 0600 socket unit
    try:
        server = _Server(path, Handler)
    except OSError as exc:
        log(f"Error getting listener: cannot listen on {path}: {exc.strerror or exc}")
        return 1
    finally:
        os.umask(old_umask)
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(str(os.getpid()))

    def shut_down(signum, _frame):
        log(f"received signal {signum}, stopping")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    daemon.resume()
    log(f"listening on {path}")
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        daemon.stop_all()
        for leftover in (path, pidfile):
            if leftover:
                try:
                    os.unlink(leftover)
                except OSError:
                    pass
    return 0


USAGE = ("usage: dhcp daemon [-socketpath PATH] [-hostprefix PREFIX] [-pidfile PATH] [-broadcast] "
         "[-timeout DURATION] [-resendmax DURATION] [-resendtimeout DURATION]")


def main(argv: list[str]) -> int:
    try:
        flags = parse_flags(argv)
    except ValueError as exc:
        if str(exc) != "usage":
            sys.stderr.write(f"{exc}\n")
        sys.stderr.write(USAGE + "\n")
        return 2
    return serve(flags)
