"""`pynet pull` / `pynet push` against a real registry: Debian's docker-registry (the distribution project's
`registry` server) run by the test on 127.0.0.1 inside a sandbox netns, filled with `skopeo copy` from an
OCI layout built here from the busybox image. Every client command runs in that netns.

Registries (plain, htpasswd/bcrypt, token auth with a token server this test runs) are started per module,
ended by their PID, and their storage lives in pytest's tmp dirs.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from netns_fixtures.namespaces import Netns
from pynet.launcher import images, security

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYNET = os.path.join(ROOT, ".venv", "bin", "pynet")
REGISTRY = shutil.which("docker-registry")
SKOPEO = shutil.which("skopeo")
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and the launcher need root"),
    pytest.mark.skipif(not (REGISTRY and SKOPEO), reason="docker-registry and skopeo (scripts/install.sh)"),
    pytest.mark.skipif(not security.seccomp_available(), reason="python3-seccomp not installed (scripts/install.sh)"),
]
OPEN, BASIC, TOKEN, TOKEN_SERVER, TLS, LIST_MANIFEST = 5000, 5001, 5002, 5003, 5004, 5005
USER, PASSWORD = "alice", "s3cret-pass"


# -- the OCI layout skopeo copies from ------------------------------------------------------------
class Layout:
    """An OCI image layout: tags gzip, zstd (same image, layers compressed each way), baddiff (its config's
    rootfs.diff_ids do not match the layers) and multi (an image index with linux/amd64 and linux/arm64,
    each with a top layer whose /arch names it)."""

    def __init__(self, path: str, base_layer_dir: str):
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"))
        base = io.BytesIO()
        with tarfile.open(fileobj=base, mode="w") as tf:
            tf.add(base_layer_dir, arcname=".")
        refs = {}
        for compression in ("gzip", "zstd"):
            refs[compression] = self.image(base.getvalue(), "amd64", compression)
        refs["baddiff"] = self.image(base.getvalue(), "amd64", "gzip", wrong_diff_id=True)
        entries = []
        for arch in ("arm64", "amd64"):   # amd64 second: the pick is by platform, not by position
            desc = self.image(base.getvalue(), arch, "gzip")
            entries.append(dict(desc, platform={"os": "linux", "architecture": arch}))
        index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": entries}).encode()
        refs["multi"] = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": self.blob(index),
                         "size": len(index)}
        with open(os.path.join(path, "index.json"), "w") as fh:
            json.dump({"schemaVersion": 2, "manifests": [
                dict(d, annotations={"org.opencontainers.image.ref.name": ref}) for ref, d in refs.items()]}, fh)
        with open(os.path.join(path, "oci-layout"), "w") as fh:
            json.dump({"imageLayoutVersion": "1.0.0"}, fh)

    def blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.path, "blobs", "sha256", digest), "wb") as fh:
            fh.write(data)
        return f"sha256:{digest}"

    def image(self, base_tar: bytes, arch: str, compression: str, wrong_diff_id: bool = False) -> dict:
        top = io.BytesIO()
        with tarfile.open(fileobj=top, mode="w") as tf:
            marker = [("baddiff", b"")] if wrong_diff_id else []   # a top layer of its own: not in the store yet
            for name, data in [("arch", f"{arch}\n".encode()), ("etc/.wh.group", b"")] + marker:
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
        layers, diff_ids = [], []
        for tar in (base_tar, top.getvalue()):
            packed = gzip.compress(tar, mtime=0) if compression == "gzip" else _zstd(tar)
            layers.append({"mediaType": f"application/vnd.oci.image.layer.v1.tar+{compression}",
                           "digest": self.blob(packed), "size": len(packed)})
            diff_ids.append("sha256:" + hashlib.sha256(tar + b"x" * wrong_diff_id).hexdigest())
        config = json.dumps({"architecture": arch, "os": "linux",
                             "config": {"Env": ["PATH=/bin:/usr/bin", "FROM_REGISTRY=yes"], "Cmd": ["cat", "/arch"]},
                             "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": self.blob(config), "size": len(config)},
                               "layers": layers}).encode()
        return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": self.blob(manifest),
                "size": len(manifest)}


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


# -- registry and token server processes ----------------------------------------------------------
class Registry:
    """One `registry serve` process with its own config and storage, ended by its PID."""

    def __init__(self, ns: Netns, workdir: str, port: int, auth: dict | None = None, tls: dict | None = None):
        self.ns, self.port, self.host = ns, port, f"127.0.0.1:{port}"
        self.storage = os.path.join(workdir, f"storage-{port}")
        config = {"version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
                  "storage": {"filesystem": {"rootdirectory": self.storage}, "delete": {"enabled": True}},
                  "http": {"addr": self.host, **({"tls": tls} if tls else {})}}
        if auth:
            config["auth"] = auth
        self.config = os.path.join(workdir, f"registry-{port}.yml")
        with open(self.config, "w") as fh:
            json.dump(config, fh)   # JSON is YAML
        self.log = open(os.path.join(workdir, f"registry-{port}.log"), "wb")
        self.proc = ns.popen([REGISTRY, "serve", self.config], stdout=self.log, stderr=subprocess.STDOUT)
        _wait_listening(ns, port, self.proc, self.log.name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.storage, ignore_errors=True)

    @contextlib.contextmanager
    def blob_changed(self, digest: str, change):
        """The stored blob replaced by ``change(its bytes)`` for the length of the block (the registry serves
        it as it is: only a client's digest check can tell)."""
        hexd = digest.split(":", 1)[1]
        path = os.path.join(self.storage, "docker", "registry", "v2", "blobs", "sha256", hexd[:2], hexd, "data")
        with open(path, "rb") as fh:
            saved = fh.read()
        changed = change(saved)
        assert len(changed) == len(saved) and changed != saved
        try:
            with open(path, "r+b") as fh:
                fh.write(changed)
            yield
        finally:
            with open(path, "wb") as fh:
                fh.write(saved)


def _wait_listening(ns: Netns, port: int, proc, log: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"registry on port {port} exited: {open(log).read()}")
        with ns.entered():
            s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on port {port} after 30 s") from None
            time.sleep(0.05)
        finally:
            s.close()


class TokenServer:
    """The token endpoint of the registry's `auth.token` scheme: checks Basic credentials and answers an
    RS256 JWT (signed with openssl, certificate in the x5c header) granting the requested scope."""

    def __init__(self, ns: Netns, workdir: str, port: int):
        self.key, self.cert = os.path.join(workdir, "token.key"), os.path.join(workdir, "token.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key,
                        "-out", self.cert, "-days", "1", "-subj", "/CN=pynet-test-token"],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"], check=True,
                             capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                from urllib.parse import parse_qs, urlsplit

                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                auth = self.headers.get("Authorization", "")
                server.requests.append(dict(query, authorization=auth))
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if auth != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": server.token(query.get("scope", ""))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        with ns.entered():   # the listening socket is made inside the netns and stays there
            self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.realm = f"http://127.0.0.1:{port}/token"

    def token(self, scope: str) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        access = []
        for item in scope.split():
            kind, name, actions = item.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]}
        claims = {"iss": "pynet-test", "sub": USER, "aud": "pynet-test-registry", "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=signing_input.encode(),
                             check=True, capture_output=True).stdout
        return f"{signing_input}.{b64(sig)}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Env:
    """Everything of the module: the netns, the store, the registries; ``pynet(...)`` runs the CLI there."""

    def __init__(self, ns: Netns, workdir: str):
        self.ns, self.workdir = ns, workdir
        self.root = os.path.join(workdir, "store")
        self.env = dict(os.environ, PYNET_ROOT=self.root, PYNET_STATE=os.path.join(workdir, "state"),
                        HOME=os.path.join(workdir, "home"), XDG_RUNTIME_DIR=os.path.join(workdir, "run"))
        self.env.pop("REGISTRY_AUTH_FILE", None)
        self.registries: list[Registry] = []

    def pynet(self, *argv, timeout: float = 120):
        res = self.ns.run([PYNET, *argv], env=self.env, timeout=timeout)
        res.out, res.err = res.stdout.decode(), res.stderr.decode()
        return res

    def skopeo(self, *argv):
        res = self.ns.run([SKOPEO, "--insecure-policy", *argv], env=self.env, timeout=120)
        assert res.returncode == 0, res.stderr.decode()
        return res.stdout.decode()

    def inspect_remote(self, ref: str, *creds) -> dict:
        return json.loads(self.skopeo("inspect", "--tls-verify=false", *creds, f"docker://{ref}"))

    def raw_manifest(self, ref: str, *creds) -> dict:
        return json.loads(self.skopeo("inspect", "--raw", "--tls-verify=false", *creds, f"docker://{ref}"))

    def store_entries(self) -> tuple[list[str], list[str]]:
        return (sorted(os.listdir(os.path.join(self.root, "images"))),
                sorted(os.listdir(os.path.join(self.root, "layers"))))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("registry"))
    ns = Netns.create("pynt-r")
    e = Env(ns, workdir)
    token_server = None
    try:
        old = os.environ.get("PYNET_ROOT")
        os.environ["PYNET_ROOT"] = e.root
        try:
            busybox = images.build_busybox()
        finally:
            if old is None:
                os.environ.pop("PYNET_ROOT")
            else:
                os.environ["PYNET_ROOT"] = old
        e.layout = Layout(os.path.join(workdir, "layout"), os.path.join(e.root, "layers", busybox["layers"][0]))
        htpasswd = os.path.join(workdir, "htpasswd")
        with open(htpasswd, "w") as fh:
            fh.write(_bcrypt_line(USER, PASSWORD))
        token_server = TokenServer(ns, workdir, TOKEN_SERVER)
        e.token_server = token_server
        e.open = Registry(ns, workdir, OPEN)
        e.registries.append(e.open)
        e.basic = Registry(ns, workdir, BASIC, {"htpasswd": {"realm": "pynet-test", "path": htpasswd}})
        e.registries.append(e.basic)
        e.token = Registry(ns, workdir, TOKEN, {"token": {
            "realm": token_server.realm, "service": "pynet-test-registry", "issuer": "pynet-test",
            "rootcertbundle": token_server.cert}})
        e.registries.append(e.token)
        e.tls = Registry(ns, workdir, TLS, tls={"certificate": token_server.cert, "key": token_server.key})
        e.registries.append(e.tls)
        creds = ["--dest-creds", f"{USER}:{PASSWORD}"]
        for registry, extra in ((e.open, []), (e.basic, creds), (e.token, creds), (e.tls, [])):
            e.skopeo("copy", "--dest-tls-verify=false", *extra, f"oci:{e.layout.path}:gzip",
                     f"docker://{registry.host}/busybox:gzip")
        e.skopeo("copy", "--dest-tls-verify=false", "--format", "v2s2", f"oci:{e.layout.path}:gzip",
                 f"docker://{e.open.host}/busybox:v2s2")
        e.skopeo("copy", "--dest-tls-verify=false", f"oci:{e.layout.path}:zstd", f"docker://{e.open.host}/busybox:zstd")
        e.skopeo("copy", "--dest-tls-verify=false", "--all", f"oci:{e.layout.path}:multi",
                 f"docker://{e.open.host}/busybox:multi")
        e.skopeo("copy", "--dest-tls-verify=false", "--all", "--format", "v2s2", f"oci:{e.layout.path}:multi",
                 f"docker://{e.open.host}/busybox:multi-docker")
        yield e
    finally:
        for registry in e.registries:
            registry.stop()
        if token_server:
            token_server.stop()
        ns.remove()


def _bcrypt_line(user: str, password: str) -> str:
    return subprocess.run(["htpasswd", "-nbB", user, password], check=True, capture_output=True, text=True).stdout


def _assert_clean_error(res, *fragments):
    assert res.returncode != 0, res.out
    assert "Traceback" not in res.err, res.err
    for fragment in fragments:
        assert fragment in res.err, res.err


def _run_image(env, image, *cmd):
    res = env.pynet("run", "--rm", "--net", "none", "--dns", "127.0.0.1", image, *cmd)
    assert res.returncode == 0, res.err
    return res.out


# -- pulls ------------------------------------------------------------------------------------------
def test_pull_by_tag_of_a_docker_schema2_image_runs(env):
    ref = f"{env.open.host}/busybox:v2s2"
    assert env.raw_manifest(ref)["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    res = env.pynet("pull", "--tls-verify=false", ref)
    assert res.returncode == 0, res.err
    digest = env.inspect_remote(ref)["Digest"]
    assert res.out.split()[:2] == [ref, digest]
    assert _run_image(env, ref) == "amd64\n"   # the image's own Cmd
    # the image's Env, and the whiteout of its top layer applied
    assert _run_image(env, ref, "sh", "-c", "echo $FROM_REGISTRY; ls /etc/group 2>&1; true").splitlines() == \
        ["yes", "ls: /etc/group: No such file or directory"]
    env.pynet("image", "rm", ref)


def test_pull_by_digest_checks_and_records_the_manifest_digest(env):
    digest = env.inspect_remote(f"{env.open.host}/busybox:gzip")["Digest"]
    ref = f"{env.open.host}/busybox@{digest}"
    res = env.pynet("pull", "--tls-verify=false", "--json", ref)
    assert res.returncode == 0, res.err
    [image] = json.loads(res.out)
    assert image["name"] == ref and image["digest"] == digest
    assert _run_image(env, ref, "cat", "/arch") == "amd64\n"
    assert env.pynet("image", "rm", ref).returncode == 0


@pytest.mark.parametrize("tag, media", [
    ("multi", "application/vnd.oci.image.index.v1+json"),
    ("multi-docker", "application/vnd.docker.distribution.manifest.list.v2+json"),
])
def test_manifest_list_pulls_the_linux_amd64_image(env, tag, media):
    ref = f"{env.open.host}/busybox:{tag}"
    index = env.raw_manifest(ref)
    assert index["mediaType"] == media
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["arm64", "amd64"]
    res = env.pynet("pull", "--tls-verify=false", "--json", ref)
    assert res.returncode == 0, res.err
    [image] = json.loads(res.out)
    assert image["digest"] == index["manifests"][1]["digest"] and image["architecture"] == "amd64"
    raw_index = env.skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").encode()
    assert image["index_digest"] == "sha256:" + hashlib.sha256(raw_index).hexdigest()
    assert _run_image(env, ref, "cat", "/arch") == "amd64\n"
    env.pynet("image", "rm", ref)


def test_zstd_layers_are_decompressed(env):
    ref = f"{env.open.host}/busybox:zstd"
    media = {layer["mediaType"] for layer in env.raw_manifest(ref)["layers"]}
    assert media == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    res = env.pynet("pull", "--tls-verify=false", ref)
    assert res.returncode == 0, res.err
    assert _run_image(env, ref, "sh", "-c", "cat /arch; busybox --help | head -1 | cut -d' ' -f1") == "amd64\nBusyBox\n"
    env.pynet("image", "rm", ref)


def test_a_corrupted_blob_is_refused_and_nothing_is_kept(env):
    ref = f"{env.open.host}/corrupt:v1"
    env.skopeo("copy", "--dest-tls-verify=false", f"oci:{env.layout.path}:gzip", f"docker://{ref}")
    top = env.raw_manifest(ref)["layers"][-1]["digest"]
    before = env.store_entries()

    def flip_middle_byte(data: bytes) -> bytes:   # same length: only the digest can tell
        mid = len(data) // 2
        return data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:]

    with env.open.blob_changed(top, flip_middle_byte):
        res = env.pynet("pull", "--tls-verify=false", ref)
        _assert_clean_error(res, f"blob {top}", "corrupted", "nothing kept")
        assert env.store_entries() == before   # no image, no layer, no scratch dir
        assert env.pynet("image", "inspect", ref).returncode == 1


def test_a_manifest_that_does_not_match_its_digest_is_refused(env):
    ref = f"{env.open.host}/corrupt-manifest:v1"
    env.skopeo("copy", "--dest-tls-verify=false", f"oci:{env.layout.path}:gzip", f"docker://{ref}")
    digest = env.inspect_remote(ref)["Digest"]
    before = env.store_entries()

    def change_a_size(data: bytes) -> bytes:   # still a valid manifest of the same length
        at = data.index(b'"size":') + len(b'"size":')
        while data[at + 1:at + 2].isdigit():
            at += 1
        return data[:at] + b"%d" % ((int(data[at:at + 1]) + 1) % 10) + data[at + 1:]

    with env.open.blob_changed(digest, change_a_size):
        res = env.pynet("pull", "--tls-verify=false", f"{env.open.host}/corrupt-manifest@{digest}")
        _assert_clean_error(res, f"manifest {digest} of {env.open.host}/corrupt-manifest: content has digest",
                            "nothing kept")
        assert env.store_entries() == before


def test_a_manifest_that_is_json_but_not_an_object_is_refused(env):
    class Handler(BaseHTTPRequestHandler):   # a registry answering a JSON list as the manifest
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = b"[]" if "/manifests/" in self.path else b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with env.ns.entered():
        httpd = ThreadingHTTPServer(("127.0.0.1", LIST_MANIFEST), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        before = env.store_entries()
        res = env.pynet("pull", "--tls-verify=false", f"127.0.0.1:{LIST_MANIFEST}/listed:v1")
        _assert_clean_error(res, f"manifest v1 of 127.0.0.1:{LIST_MANIFEST}/listed: not a JSON object")
        assert env.store_entries() == before
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_layer_that_unpacks_to_other_content_than_the_config_says_is_refused(env):
    ref = f"{env.open.host}/baddiff:v1"
    env.skopeo("copy", "--dest-tls-verify=false", f"oci:{env.layout.path}:baddiff", f"docker://{ref}")
    before = env.store_entries()
    _assert_clean_error(env.pynet("pull", "--tls-verify=false", ref), "unpacks to content with digest",
                        "the image config says", "nothing kept")
    assert env.store_entries() == before


# -- auth -------------------------------------------------------------------------------------------
def test_basic_auth_with_creds_or_an_auth_file(env, tmp_path):
    ref = f"{env.basic.host}/busybox:gzip"
    _assert_clean_error(env.pynet("pull", "--tls-verify=false", ref), "needs a login", "--creds")
    _assert_clean_error(env.pynet("pull", "--tls-verify=false", "--creds", f"{USER}:wrong", ref),
                        f"user '{USER}' not allowed to pull busybox")
    res = env.pynet("pull", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", ref)
    assert res.returncode == 0, res.err
    assert env.pynet("image", "rm", ref).returncode == 0
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {env.basic.host: {
        "auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))
    res = env.pynet("pull", "--tls-verify=false", "--authfile", str(auth_file), ref)
    assert res.returncode == 0, res.err
    assert _run_image(env, ref, "cat", "/arch") == "amd64\n"
    env.pynet("image", "rm", ref)


def test_podmans_default_auth_file_is_read(env):
    ref = f"{env.basic.host}/busybox:gzip"
    path = os.path.join(env.env["XDG_RUNTIME_DIR"], "containers", "auth.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"auths": {f"https://{env.basic.host}": {
            "auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}, fh)
    try:
        res = env.pynet("pull", "--tls-verify=false", ref)
        assert res.returncode == 0, res.err
        env.pynet("image", "rm", ref)
    finally:
        os.unlink(path)


def test_token_auth_gets_a_bearer_token_for_the_repository_scope(env):
    ref = f"{env.token.host}/busybox:gzip"
    _assert_clean_error(env.pynet("pull", "--tls-verify=false", ref), "token server", "refused anonymous access")
    env.token_server.requests.clear()
    res = env.pynet("pull", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", ref)
    assert res.returncode == 0, res.err
    assert [(r["service"], r["scope"]) for r in env.token_server.requests] == \
        [("pynet-test-registry", "repository:busybox:pull")]   # one token serves every request of the pull
    assert _run_image(env, ref, "cat", "/arch") == "amd64\n"
    env.pynet("image", "rm", ref)


def test_https_registry_with_an_untrusted_certificate(env):
    ref = f"{env.tls.host}/busybox:gzip"
    _assert_clean_error(env.pynet("pull", ref), f"registry {env.tls.host}: TLS certificate not trusted",
                        "--tls-verify=false")
    res = env.pynet("pull", "--tls-verify=false", ref)   # https without verification (no fallback to http)
    assert res.returncode == 0, res.err
    assert _run_image(env, ref, "cat", "/arch") == "amd64\n"
    env.pynet("image", "rm", ref)


# -- push -------------------------------------------------------------------------------------------
def test_push_then_pull_back(env):
    local = "pushsrc:v1"
    assert env.pynet("pull", "--tls-verify=false", f"{env.open.host}/busybox:multi").returncode == 0
    assert env.pynet("image", "tag", f"{env.open.host}/busybox:multi", local).returncode == 0
    dest = f"{env.token.host}/pushed:v1"
    res = env.pynet("push", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", "--json", local, dest)
    assert res.returncode == 0, res.err
    [pushed] = json.loads(res.out)
    creds = ["--creds", f"{USER}:{PASSWORD}"]
    remote = env.inspect_remote(dest, *creds)
    assert remote["Digest"] == pushed["digest"] and remote["Architecture"] == "amd64" and remote["Os"] == "linux"
    assert remote["Layers"] == pushed["layers"] and len(remote["Layers"]) == 2
    config = json.loads(env.skopeo("inspect", "--config", "--tls-verify=false", *creds, f"docker://{dest}"))
    assert config["config"]["Cmd"] == ["cat", "/arch"]
    # the whiteout of the image's top layer went back out as an OCI .wh. file
    for name in (local, f"{env.open.host}/busybox:multi"):
        env.pynet("image", "rm", name)
    res = env.pynet("pull", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", dest)
    assert res.returncode == 0, res.err
    assert _run_image(env, dest, "sh", "-c", "cat /arch; ls /etc/group 2>&1 | grep -c 'No such'") == "amd64\n1\n"
    # pushing again uploads no layer twice and gives the same manifest
    res = env.pynet("push", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", "--json", dest)
    assert res.returncode == 0, res.err
    assert json.loads(res.out)[0]["layers"] == pushed["layers"], (res.out, pushed)
    assert json.loads(res.out)[0]["digest"] == pushed["digest"]
    env.pynet("image", "rm", dest)


def test_push_of_the_default_busybox_image_runs_after_pull(env):
    dest = f"{env.open.host}/plain-busybox:1"
    res = env.pynet("push", "--tls-verify=false", "busybox", dest)
    assert res.returncode == 0, res.err
    assert env.raw_manifest(dest)["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    res = env.pynet("pull", "--tls-verify=false", dest)
    assert res.returncode == 0, res.err
    assert _run_image(env, dest, "echo", "hi") == "hi\n"
    env.pynet("image", "rm", dest)


def _answer_garbage(server: socket.socket) -> None:
    """Not a registry: every connection gets a line that is neither TLS nor HTTP."""
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.sendall(b"garbage\r\n")


# -- errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("busybox", ("docker.io", "library/busybox", "latest", None)),
    ("quay.io/org/app:1.2", ("quay.io", "org/app", "1.2", None)),
    ("localhost/app", ("localhost", "app", "latest", None)),
    ("127.0.0.1:5000/a/b@sha256:" + "a" * 64, ("127.0.0.1:5000", "a/b", None, "sha256:" + "a" * 64)),
    ("org/app:v1", ("docker.io", "org/app", "v1", None)),
])
def test_references_are_read_as_docker_reads_them(text, expected):
    from pynet.launcher.registry import parse_reference

    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected


@pytest.mark.parametrize("ref, fragment", [
    ("Busybox", "repository 'library/Busybox'"),
    ("127.0.0.1:5000/busybox:bad/tag", "invalid image reference"),
    ("127.0.0.1:5000/busybox@sha256:1234", "digest 'sha256:1234'"),
    ("http://127.0.0.1:5000/busybox", "invalid image reference"),
])
def test_bad_references_are_clear_errors(env, ref, fragment):
    _assert_clean_error(env.pynet("pull", "--tls-verify=false", ref), fragment)


def test_unreachable_registry_unknown_tag_and_tls_are_clear_errors(env):
    _assert_clean_error(env.pynet("pull", "--tls-verify=false", "127.0.0.1:5999/busybox"),
                        "cannot reach registry 127.0.0.1:5999: connection refused")
    _assert_clean_error(env.pynet("pull", "--tls-verify=false", f"{env.open.host}/busybox:nope"),
                        f"{env.open.host}/busybox:nope: not found in registry {env.open.host}")
    _assert_clean_error(env.pynet("pull", f"{env.open.host}/busybox:gzip"), "--tls-verify=false")
    _assert_clean_error(env.pynet("push", "--tls-verify=false", "no-such-local", f"{env.open.host}/x:1"),
                        "no such image: no-such-local")
    with env.ns.entered():
        garbage = socket.create_server(("127.0.0.1", 5998))
    answering = threading.Thread(target=_answer_garbage, args=(garbage,), daemon=True)
    answering.start()
    try:
        _assert_clean_error(env.pynet("pull", "--tls-verify=false", "127.0.0.1:5998/busybox"),
                            "registry 127.0.0.1:5998: not an HTTP answer")
    finally:
        garbage.shutdown(socket.SHUT_RDWR)   # wakes the accept() of the thread
        garbage.close()
        answering.join(10)
        assert not answering.is_alive()
    res = env.pynet("pull", "--tls-verify=false", "--json", "127.0.0.1:5999/busybox")
    assert res.returncode == 1 and "cannot reach registry" in json.loads(res.out)["error"]
