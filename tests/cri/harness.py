"""Debian's containerd 1.6 with its CRI plugin, fenced into a temp dir and a sandbox host netns, and a small
CRI v1 client over gRPC (stubs generated at test time from tests/cri/api.proto).

containerd runs inside ``host_ns`` (network namespace only, so the cgroup mounts and the /run/netns pins it
makes stay visible) with root, state, grpc socket, runc root, CNI bin/conf dirs and host-local leases under
one temp dir. What containerd 1.6 cannot be told to move: pod netns pins (/run/netns/cni-<uuid>, removed by
its own StopPodSandbox), shim sockets under /run/containerd/s, and libcni's result cache
(/var/lib/cni/results, removed on DEL); teardown removes those directories when the test created them.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

from cni_plugins import syscalls
from netns_fixtures import Netns
from pynet.launcher import cgroups
from pynet.launcher.cgroups import CgroupError

PAUSE_IMAGE = "localhost/pynet-pause:1"
NAMESPACE = "k8s.io"
BUSYBOX = "/bin/busybox"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NEEDED_BINARIES = ("containerd", "ctr", "containerd-shim-runc-v2", "runc")
OUTSIDE_PATHS = ("/run/containerd/s", "/run/containerd", "/var/lib/cni/results", "/var/lib/cni")
PROTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "api.proto")


def missing_requirements() -> str | None:
    """Why containerd cannot be run here, or None."""
    missing = [b for b in NEEDED_BINARIES if shutil.which(b, path=SYSTEM_PATH) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian packages containerd, runc)"
    if not os.access(BUSYBOX, os.X_OK):
        return "busybox-static not installed (the pause image is built from /bin/busybox)"
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401
    except ImportError:
        return "grpcio/grpcio-tools not installed (pip install -e '.[test]')"
    return None


# -- the CRI v1 API ----------------------------------------------------------------------------------
def cri_api(directory: str):
    """(api_pb2, api_pb2_grpc) generated from tests/cri/api.proto into ``directory``."""
    from grpc_tools import protoc

    proto_dir = os.path.dirname(PROTO)
    rc = protoc.main(["grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={directory}",
                      f"--grpc_python_out={directory}", PROTO])
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed on {PROTO} ({rc})")
    sys.path.insert(0, directory)
    try:
        return importlib.import_module("api_pb2"), importlib.import_module("api_pb2_grpc")
    finally:
        sys.path.remove(directory)


class CRI:
    """RuntimeService calls as kubelet makes them; remembers every sandbox it ran for teardown."""

    def __init__(self, api, socket_path: str):
        import grpc

        self.api = api
        self.pb, pb_grpc = api
        self.channel = grpc.insecure_channel(f"unix://{socket_path}")
        self.runtime = pb_grpc.RuntimeServiceStub(self.channel)
        self.sandboxes: set[str] = set()
        self.netns_paths: set[str] = set()

    def close(self) -> None:
        self.channel.close()

    def version(self, timeout: float = 5):
        return self.runtime.Version(self.pb.VersionRequest(version="v1"), timeout=timeout)

    def run_pod(self, name: str, cgroup_parent: str, port_mappings=(), dns: dict | None = None,
                runtime_handler: str = "") -> str:
        pb = self.pb
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=hashlib.sha1(name.encode()).hexdigest(),
                                           namespace="default", attempt=0),
            hostname=name, log_directory="",
            port_mappings=[pb.PortMapping(protocol=pb.TCP, container_port=cport, host_port=hport, host_ip="")
                           for hport, cport in port_mappings],
            dns_config=pb.DNSConfig(**dns) if dns else None,
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=cgroup_parent))
        reply = self.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler),
                                           timeout=120)
        self.sandboxes.add(reply.pod_sandbox_id)
        self.netns_path(reply.pod_sandbox_id)
        return reply.pod_sandbox_id

    def status(self, sandbox_id: str):
        """(PodSandboxStatus, the verbose info as a dict)."""
        reply = self.runtime.PodSandboxStatus(self.pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id,
                                                                              verbose=True), timeout=30)
        return reply.status, json.loads(reply.info.get("info", "{}"))

    def netns_path(self, sandbox_id: str) -> str:
        _, info = self.status(sandbox_id)
        for ns in info["runtimeSpec"]["linux"]["namespaces"]:
            if ns["type"] == "network":
                self.netns_paths.add(ns["path"])
                return ns["path"]
        raise AssertionError(f"sandbox {sandbox_id} has no network namespace path: {info}")

    def stop_pod(self, sandbox_id: str) -> None:
        self.runtime.StopPodSandbox(self.pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)

    def remove_pod(self, sandbox_id: str) -> None:
        self.runtime.RemovePodSandbox(self.pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
        self.sandboxes.discard(sandbox_id)

    def pods(self) -> list:
        return list(self.runtime.ListPodSandbox(self.pb.ListPodSandboxRequest(), timeout=30).items)


def pod_netns(path: str) -> Netns:
    """A Netns handle on containerd's pod netns pin (not ours: Netns.remove is never called on it)."""
    return Netns(os.path.basename(path))


def processes_naming(marker: str) -> list[int]:
    """PIDs (this one left out) whose command line contains ``marker``, e.g. a socket path in a temp dir."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read() and int(entry) != os.getpid():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


# -- the pause image ---------------------------------------------------------------------------------
def _blob(layout: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    layout.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}", len(data)


def write_pause_image(path: str, name: str = PAUSE_IMAGE) -> None:
    """An OCI image layout tarball: one layer with busybox-static as /bin/sleep; entrypoint `sleep inf`."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for d in ("bin", "dev", "proc", "sys", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, "bin/sleep")
    layer_bytes = layer.getvalue()
    with tarfile.open(path, "w") as out:
        layer_digest, layer_size = _blob(out, layer_bytes)
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/bin/sleep", "inf"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }).encode()
        config_digest, config_size = _blob(out, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                       "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest,
                        "size": layer_size}],
        }).encode()
        manifest_digest, manifest_size = _blob(out, manifest)
        index = json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
            "size": manifest_size, "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "1"}}]}).encode()
        for member, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


# -- containerd --------------------------------------------------------------------------------------
class Containerd:
    """One containerd process in ``host`` with everything it writes under a temp dir of its own."""

    def __init__(self, host: Netns, cni_bin_dir: str, plugin_env: dict | None = None):
        self.host = host
        self.plugin_env = dict(plugin_env or {})
        # short: the grpc socket path must fit sockaddr_un
        self.base = tempfile.mkdtemp(prefix="pynet-cri-", dir="/tmp")
        self.cni_bin_dir = cni_bin_dir
        self.socket = self.path("containerd.sock")
        self.cgroup_parent = f"/pynet-cri-{os.getpid()}-{os.path.basename(self.base)}"
        self._outside = [p for p in OUTSIDE_PATHS if not os.path.exists(p)]
        self.proc: subprocess.Popen | None = None
        for d in ("root", "state", "net.d", "ipam", "runc", "opt"):
            os.makedirs(self.path(d), exist_ok=True)
        self._write_config()

    def path(self, *parts) -> str:
        return os.path.join(self.base, *parts)

    def _write_config(self) -> None:
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        with open(self.path("config.toml"), "w") as f:
            f.write(f"""version = 2
root = "{self.path('root')}"
state = "{self.path('state')}"

[grpc]
  address = "{self.socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{self.path('opt')}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  systemd_cgroup = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.cni]
  bin_dir = "{self.cni_bin_dir}"
  conf_dir = "{self.path('net.d')}"
  max_conf_num = 1

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{self.path('runc')}"
""")

    def write_conflist(self, name: str, bridge: str, subnet: str, gateway: str) -> dict:
        """The conflist a node would have: bridge (gateway, masquerade, host-local), portmap, firewall."""
        conflist = {
            "cniVersion": "1.0.0", "name": name,
            "plugins": [
                {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet, "gateway": gateway}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": self.path("ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "firewall"},
            ]}
        with open(self.path("net.d", f"10-{name}.conflist"), "w") as f:
            json.dump(conflist, f, indent=1)
        return conflist

    def env(self) -> dict:
        # libcni hands containerd's environment to the plugins (PYNET_DAEMON, PYNET_SOCKET reach the shim)
        return {"PATH": SYSTEM_PATH, "HOME": self.base, "TMPDIR": self.base, **self.plugin_env}

    def start(self, api, timeout: float = 60) -> CRI:
        """Starts containerd (again) and returns a CRI client once the CRI service answers."""
        log = open(self.path("containerd.log"), "ab")
        try:
            self.proc = self.host.popen(["containerd", "--config", self.path("config.toml")], env=self.env(),
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        client = CRI(api, self.socket)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if os.path.exists(self.socket):
                    client.version(timeout=2)
                    return client
            except Exception as exc:  # grpc.RpcError until the CRI plugin serves
                if time.monotonic() > deadline:
                    client.close()
                    raise RuntimeError(f"containerd's CRI service did not answer: {exc}\n{self.log_tail()}")
            time.sleep(0.1)  # readiness polling of a starting daemon, not a timed assertion

    def restart(self, client: CRI) -> CRI:
        """Stops containerd with its pods running and starts it again; the new client knows the old pods."""
        client.close()
        self.stop()
        fresh = self.start(client.api)
        fresh.sandboxes |= client.sandboxes
        fresh.netns_paths |= client.netns_paths
        return fresh

    def log_tail(self, chars: int = 4000) -> str:
        try:
            with open(self.path("containerd.log"), "rb") as f:
                return f.read().decode(errors="replace")[-chars:]
        except OSError:
            return ""

    def ctr(self, *args, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(["ctr", "-a", self.socket, "-n", NAMESPACE, *args], env=self.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed ({proc.returncode}): "
                                 f"{proc.stderr.decode(errors='replace')}")
        return proc

    def import_pause_image(self) -> None:
        tar = self.path("pause.tar")
        write_pause_image(tar)
        self.ctr("images", "import", "--snapshotter", "overlayfs", tar)

    def stop(self) -> None:
        """SIGTERM to our containerd (by PID) and wait; shims and pods keep running, as on a restart."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    # -- teardown -------------------------------------------------------------------------------
    def teardown(self, client: CRI | None) -> list[str]:
        """Stops and removes every pod through CRI, stops containerd, then kills what is left of ours
        (shims, pod processes), unmounts, removes cgroups, netns pins and the temp dir; returns notes."""
        notes = []
        if client is not None:
            if self.proc is not None and self.proc.poll() is None:
                try:  # also the ones a failed RunPodSandbox left behind
                    client.sandboxes |= {pod.id for pod in client.pods()}
                except Exception as exc:
                    notes.append(f"listing sandboxes: {exc}")
                for sandbox_id in list(client.sandboxes):
                    try:
                        client.stop_pod(sandbox_id)
                        client.remove_pod(sandbox_id)
                    except Exception as exc:
                        notes.append(f"removing sandbox {sandbox_id[:12]}: {exc}")
            client.close()
        self.stop()
        pods = self._pod_cgroups()
        shims = processes_naming(self.socket)
        if shims or pods.pids():
            notes.append(f"processes left running: shims {shims}, in pod cgroups {sorted(pods.pids())}")
        for pid in shims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._wait_gone(shims)
        try:
            pods.remove()  # SIGKILLs whatever is left in them first
        except CgroupError as exc:
            notes.append(str(exc))
        for point in self._mounts_below(self.base):
            try:
                syscalls.umount2(point, syscalls.MNT_DETACH)
            except OSError as exc:
                notes.append(f"umount {point}: {exc}")
        for sandbox_id in (client.sandboxes if client else ()):
            # what a pod containerd could not tear down leaves: libcni's cache (our network and CRI's own
            # cni-loopback) and the socket of its shim (containerd 1.6: /run/containerd/s/sha256(address/ns/id))
            shim_socket = hashlib.sha256(f"{self.socket}/{NAMESPACE}/{sandbox_id}".encode()).hexdigest()
            for left in glob.glob(f"/var/lib/cni/results/*-{sandbox_id}-*") + glob.glob(f"/run/containerd/s/{shim_socket}"):
                notes.append(f"file left: {left}")
                os.unlink(left)
        for path in (client.netns_paths if client else ()):
            if os.path.exists(path):
                notes.append(f"pod netns pin left: {path}")
                try:
                    syscalls.unpin(path)
                except OSError:
                    pass
        shutil.rmtree(self.base, ignore_errors=True)
        for p in self._outside:  # directories only when empty: anything else is another runtime's
            try:
                os.rmdir(p)
            except OSError:
                pass
        return notes

    @staticmethod
    def _wait_gone(pids, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)

    @staticmethod
    def _mounts_below(base: str) -> list[str]:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        return sorted((p for p in points if p.startswith(base + "/")), key=len, reverse=True)

    def _pod_cgroups(self) -> cgroups.ContainerCgroups:
        """Every cgroup directory under our cgroup parent, in every hierarchy, deepest first."""
        dirs = []
        for controller in os.listdir("/sys/fs/cgroup"):
            top = os.path.join("/sys/fs/cgroup", controller, self.cgroup_parent.lstrip("/"))
            dirs += [root for root, _, _ in os.walk(top)]
        return cgroups.from_paths({str(i): d for i, d in enumerate(sorted(dirs, key=len, reverse=True))})
