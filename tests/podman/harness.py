"""Debian's podman 4.3 (CNI backend, runc) fenced into temp dirs and a sandbox host netns.

Podman's state lives under one temp dir (config, storage, runroot, tmpdir, network configs, IPAM leases,
events log), the process runs inside ``host_ns`` (so bridges, veths, nft rules and the port-reservation
sockets are made there, never in the root netns) and containers get a cgroup parent of their own that
teardown removes. What root podman 4.3 cannot be told to move: container netns files
(``/run/netns/netns-<uuid>``, removed by podman on cleanup), libcni's result cache (/var/lib/cni/results,
one file per attachment, removed on DEL) and containers/image's blob-info cache
(/var/lib/containers/cache); teardown removes those directories when the test created them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import resource
import shutil
import subprocess
import tarfile
import tempfile
import time

from netns_fixtures import Netns

IMAGE = "localhost/pynet-busybox:latest"
APPLETS = ("sh", "httpd", "nc", "sleep", "cat", "echo", "wget", "timeout", "ip", "hostname", "true", "ls")
BUSYBOX = "/bin/busybox"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OUTSIDE_PATHS = ("/var/lib/cni/results", "/var/lib/cni", "/var/lib/containers/cache/blob-info-cache-v1.boltdb",
                 "/var/lib/containers/cache", "/var/lib/containers")
NEEDED_BINARIES = ("podman", "runc", "conmon")
# The plugin modules behind the executables podman's conflist names.
PLUGIN_MODULES = {"bridge": "cni_plugins.bridge.plugin", "host-local": "cni_plugins.ipam.host_local", "portmap": "cni_plugins.portmap.plugin",
                  "firewall": "cni_plugins.firewall.plugin", "tuning": "cni_plugins.tuning.plugin"}


def missing_requirements() -> str | None:
    """Why the podman test cannot run here, or None."""
    missing = [b for b in NEEDED_BINARIES if shutil.which(b, path=SYSTEM_PATH) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian packages podman, runc; conmon comes with podman)"
    if not os.access(BUSYBOX, os.X_OK) or "statically linked" not in _file_kind(BUSYBOX):
        return "busybox-static not installed (the test image is built from /bin/busybox)"
    return None


def missing_plugins() -> list[str]:
    return [name for name, module in PLUGIN_MODULES.items() if importlib.util.find_spec(module) is None]


def _file_kind(path: str) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(4096 * 4)
    except OSError:
        return ""
    # A static ELF has no PT_INTERP, so no "/lib64/ld-linux" string in its first pages.
    return "dynamic" if b"ld-linux" in head else "statically linked"


def _tar_of_busybox(path: str) -> None:
    with tarfile.open(path, "w") as tar:
        for d in ("bin", "www", "tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, "bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        page = b"pynet-podman-ok\n"
        info = tarfile.TarInfo("www/index.html")
        info.size = len(page)
        tar.addfile(info, io.BytesIO(page))
        for name, text in (("etc/passwd", b"root:x:0:0:root:/:/bin/sh\n"), ("etc/group", b"root:x:0:\n")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))


class Podman:
    def __init__(self, host: Netns, plugin_dir: str):
        self.host = host
        # podman refuses a runroot longer than 50 characters, so not under pytest's tmp_path
        self.base = tempfile.mkdtemp(prefix="pynet-pm-", dir="/tmp")
        self.plugin_dir = plugin_dir
        self.cgroup_parent = f"/pynet-podman-{os.getpid()}-{os.path.basename(self.base)}"
        # What root podman writes outside its configured dirs whatever it is told: libcni's result cache
        # and containers/image's blob-info cache. Teardown removes the ones that were not there before.
        self._outside = [p for p in OUTSIDE_PATHS if not os.path.exists(p)]
        for d in ("root", "runroot", "tmp", "net.d", "ipam"):
            os.makedirs(self.path(d), exist_ok=True)
        self._write_configs()

    def path(self, *parts) -> str:
        return os.path.join(self.base, *parts)

    def _write_configs(self) -> None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        # Root here lacks CAP_SYS_RESOURCE, so a container's limits may not exceed what runc has; podman
        # itself runs with RLIMIT_NPROC lowered to 32768 (seen in conmon's /proc/PID/limits).
        nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
        with open(self.path("containers.conf"), "w") as f:
            f.write(f"""[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
default_sysctls = []
netns = "bridge"
log_driver = "k8s-file"

[network]
network_backend = "cni"
cni_plugin_dirs = ["{self.plugin_dir}"]
network_config_dir = "{self.path('net.d')}"
default_network = "pynetpm"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{self.path('events.log')}"
runtime = "runc"
tmp_dir = "{self.path('tmp')}"
static_dir = "{self.path('root', 'libpod')}"
volume_path = "{self.path('root', 'volumes')}"
""")
        with open(self.path("registries.conf"), "w") as f:
            f.write("unqualified-search-registries = []\n")
        with open(self.path("storage.conf"), "w") as f:
            f.write(f"""[storage]
driver = "vfs"
runroot = "{self.path('runroot')}"
graphroot = "{self.path('root')}"
""")

    def env(self) -> dict:
        return {"PATH": SYSTEM_PATH,
                "HOME": self.base, "CONTAINERS_CONF": self.path("containers.conf"),
                "CONTAINERS_STORAGE_CONF": self.path("storage.conf"),
                "CONTAINERS_REGISTRIES_CONF": self.path("registries.conf"), "TMPDIR": self.path("tmp")}

    def argv(self, *args) -> list[str]:
        return ["podman", "--root", self.path("root"), "--runroot", self.path("runroot"),
                "--tmpdir", self.path("tmp"), "--network-config-dir", self.path("net.d"),
                "--cgroup-manager", "cgroupfs", "--runtime", "runc", "--storage-driver", "vfs",
                "--events-backend", "file", *args]

    def __call__(self, *args, timeout: float = 90, check: bool = True, input: bytes | None = None):
        # cwd: conmon writes an "oom" file into its working directory when the container is OOM-killed
        with self.host.popen(self.argv(*args), env=self.env(), cwd=self.base, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
            try:
                out, err = child.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                raise
        proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout.decode(errors='replace')}\n{proc.stderr.decode(errors='replace')}")
        return proc

    def out(self, *args, **kw) -> str:
        return self(*args, **kw).stdout.decode().strip()

    def import_busybox(self) -> None:
        tar = self.path("busybox.tar")
        _tar_of_busybox(tar)
        self("import", "--change", "CMD=/bin/sh", tar, IMAGE)

    def write_conflist(self, name: str, bridge: str, subnet: str, gateway: str, isolate: bool = False,
                       tuning: dict | None = None) -> dict:
        """podman 4.3's conflist for a bridge network, as ``podman network create [--opt isolate=true]``
        writes it, with the IPAM and tuning dataDirs moved into the temp dir."""
        firewall = {"type": "firewall", "backend": ""}
        if isolate:
            firewall["ingressPolicy"] = "same-bridge"
        conflist = {
            "cniVersion": "0.4.0", "name": name, **({"args": {"podman_options": {"isolate": "true"}}} if isolate else {}),
            "plugins": [
                {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
                 "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                          "ranges": [[{"subnet": subnet, "gateway": gateway}]],
                          "dataDir": self.path("ipam")},
                 "capabilities": {"ips": True}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
                firewall,
                # tuning saves originals under /run/cni/tuning by default: kept in the temp dir too
                dict({"type": "tuning", "dataDir": self.path("tuning")}, **(tuning or {})),
            ]}
        with open(self.path("net.d", f"{name}.conflist"), "w") as f:
            json.dump(conflist, f, indent=1)
        return conflist

    # -- teardown -------------------------------------------------------------------------------
    def teardown(self) -> list[str]:
        """Removes every container (so CNI DEL runs), then mounts and cgroups podman left; returns notes."""
        notes = []
        try:
            proc = self("rm", "-a", "-f", "-t", "0", check=False, timeout=120)
            if proc.returncode != 0:
                notes.append(f"podman rm -af: {proc.stderr.decode(errors='replace')[-500:]}")
        except subprocess.TimeoutExpired:
            notes.append("podman rm -af timed out")
        # conmon runs `podman container cleanup` (CNI DEL, which edits libcni's cache) after the container
        # exits, possibly after `rm` returned: wait for this instance's helpers before judging leftovers.
        if not self._wait_for_own_processes(timeout=20):
            notes.append("podman helper processes still running after 20 s")
        self._unmount_below(self.base)
        self._remove_cgroups()
        shutil.rmtree(self.base, ignore_errors=True)
        for p in self._outside:  # files first, then directories, and a directory only when empty
            try:
                os.rmdir(p) if os.path.isdir(p) else os.unlink(p)
            except OSError:
                pass
        return notes

    def _own_processes(self) -> list[int]:
        """PIDs whose command line names this instance's temp dir (conmon, podman cleanup)."""
        marker = self.base.encode()
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        if marker in f.read():
                            pids.append(int(entry))
                except OSError:
                    continue
        return pids

    def _wait_for_own_processes(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._own_processes():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _unmount_below(self, base: str) -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        for point in sorted((p for p in points if p.startswith(base + "/")), key=len, reverse=True):
            libc.umount2(point.encode(), 2)  # MNT_DETACH

    def _remove_cgroups(self) -> None:
        for controller in os.listdir("/sys/fs/cgroup"):
            top = os.path.join("/sys/fs/cgroup", controller, self.cgroup_parent.lstrip("/"))
            if not os.path.isdir(top):
                continue
            for root, dirs, _ in sorted(os.walk(top), key=lambda t: len(t[0]), reverse=True):
                for attempt in range(20):
                    try:
                        os.rmdir(root)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.05)


OCI_DEFAULT_ROOT = "/run/pynet-oci"


@contextlib.contextmanager
def podman_with_runtime(host: Netns, plugin_dir: str, runtime: str):
    """A fenced Podman (one at a time across test processes: they share root podman's caches in
    /var/lib) whose --runtime is ``runtime`` (pynet-oci) instead of runc, the busybox image imported.
    podman 4.3 passes its --runtime-flag values to create/start but not to delete, and no environment:
    the runtime's state is in its default --root (/run/pynet-oci), removed after if this made it."""
    import fcntl

    with open("/tmp/pynet-podman-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pm = Podman(host, plugin_dir)
        argv = pm.argv
        pm.argv = lambda *a: [runtime if x == "runc" else x for x in argv(*a)]
        made_root = not os.path.exists(OCI_DEFAULT_ROOT)
        try:
            pm.import_busybox()
            yield pm
        finally:
            notes = pm.teardown()
            if made_root and os.path.exists(OCI_DEFAULT_ROOT):
                os.rmdir(OCI_DEFAULT_ROOT)   # empty by now, or this fails the test
            assert not notes, notes
