"""A client of the OCI distribution API (registry v2): references, credentials, the auth challenge (Basic
and Bearer tokens), manifests and blobs with their digests checked. It knows nothing of the local image
store; pull_push.py moves images between the two.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)

DEFAULT_REGISTRY = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
# distribution's reference grammar (reference/regexp.go)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*\Z")
_TAG = re.compile(r"[\w][\w.-]{0,127}\Z")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
_HOST = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?\Z|\[[0-9a-fA-F:]+\](?::[0-9]+)?\Z")


class RegistryError(Exception):
    pass


@dataclass(frozen=True)
class Reference:
    registry: str          # host[:port] as written ("docker.io" for the default)
    repository: str        # "library/busybox"
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        return self.name + (f"@{self.digest}" if self.digest else f":{self.tag}")

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DEFAULT_REGISTRY else self.registry


def parse_reference(text: str) -> Reference:
    """`[registry/]repository[:tag][@digest]`, docker's rules: the first component is a registry when it
    has a '.' or ':' or is localhost; otherwise the image is on Docker Hub (library/ for one-word names)."""
    bad = f"invalid image reference {text!r}"
    if not text or text != text.strip() or "://" in text:
        raise RegistryError(f"{bad}: expected [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST]")
    rest, _, digest = text.partition("@")
    if digest and not _DIGEST.match(digest):
        raise RegistryError(f"{bad}: digest {digest!r} is not sha256: and 64 lowercase hex digits")
    tag = None
    head, slash, last = rest.rpartition("/")
    if ":" in last:
        last, tag = last.split(":", 1)
        if not _TAG.match(tag):
            raise RegistryError(f"{bad}: tag {tag!r} may hold letters, digits, '_', '.' and '-' (at most 128)")
    rest = head + slash + last
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        if not _HOST.match(first):
            raise RegistryError(f"{bad}: registry {first!r} is not HOST[:PORT]")
        registry, repository = first, remainder
    else:
        registry, repository = DEFAULT_REGISTRY, rest
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    if not _REPOSITORY.match(repository):
        raise RegistryError(f"{bad}: repository {repository!r} may hold lowercase letters, digits and "
                            "separators ('.', '_', '-', '/')")
    return Reference(registry, repository, tag if tag or digest else "latest", digest or None)


# -- credentials ------------------------------------------------------------------------------------
def auth_file_candidates(explicit: str | None = None) -> list[str]:
    """Where podman and docker keep logins, in the order podman reads them."""
    if explicit:
        return [explicit]
    out = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        out.append(os.environ["REGISTRY_AUTH_FILE"])
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/run/containers/{os.getuid()}"
    out.append(os.path.join(runtime_dir, "containers", "auth.json") if os.environ.get("XDG_RUNTIME_DIR")
               else os.path.join(runtime_dir, "auth.json"))
    out.append(os.path.join(os.path.expanduser("~"), ".docker", "config.json"))
    return out


def credentials(ref: Reference, creds: str | None = None, auth_file: str | None = None) -> tuple[str, str] | None:
    """(user, password) from ``--creds user:pass``, else from the first auth file with an entry for the
    registry (keys may be HOST, HOST/REPO... or https://HOST/...)."""
    if creds is not None:
        user, colon, password = creds.partition(":")
        if not user or not colon:
            raise RegistryError("--creds must be USER:PASSWORD")
        return user, password
    for path in auth_file_candidates(auth_file):
        try:
            with open(path) as fh:
                auths = json.load(fh).get("auths") or {}
        except FileNotFoundError:
            if auth_file:
                raise RegistryError(f"auth file {path}: no such file") from None
            continue
        except (OSError, ValueError, AttributeError) as exc:
            raise RegistryError(f"auth file {path}: not a JSON auth file ({exc})") from None
        keys = {_auth_key(k): v for k, v in auths.items()}
        for key in (f"{ref.registry}/{ref.repository}", ref.registry,
                    *(["index.docker.io/v1/", "index.docker.io"] if ref.registry == DEFAULT_REGISTRY else [])):
            entry = keys.get(key)
            if entry and entry.get("auth"):
                try:
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise RegistryError(f"auth file {path}: the entry for {key} is not base64 USER:PASSWORD") from None
                return user, password
    return None


def _auth_key(key: str) -> str:
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key.rstrip("/") if not key.endswith("/v1/") else key


# -- HTTP -------------------------------------------------------------------------------------------
class _Response:
    def __init__(self, status: int, headers, body: bytes | None, stream=None):
        self.status, self.headers, self.body, self.stream = status, headers, body, stream


class _NoRedirectAuth(urllib.request.HTTPRedirectHandler):
    """Blob downloads may redirect to object storage: the registry's Authorization must not follow."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


class Client:
    """One registry, one repository: requests answered by a 401 are retried once with the credentials
    the challenge asks for (Basic, or a Bearer token fetched from the realm for the repository's scope)."""

    def __init__(self, ref: Reference, creds: tuple[str, str] | None = None, tls_verify: bool = True,
                 timeout: float = 30):
        self.ref, self.creds, self.tls_verify, self.timeout = ref, creds, tls_verify, timeout
        self.scheme = "https"
        self._authorization: dict[str, str] = {}   # scope ("pull" / "pull,push") -> Authorization header
        context = ssl.create_default_context()
        if not tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirectAuth())
        self._probed = False

    # The base URL: https always when TLS is verified; without verification a registry that speaks plain
    # HTTP (podman's --tls-verify=false on a local registry) is reached over http after https fails.
    def _base(self) -> str:
        if not self._probed:
            self._probed = True
            if not self.tls_verify:
                try:
                    self._send("GET", f"https://{self.ref.api_host}/v2/", {}, None)
                except _PlainHTTP:
                    self.scheme = "http"
        return f"{self.scheme}://{self.ref.api_host}"

    def _send(self, method: str, url: str, headers: dict, body, stream: bool = False) -> _Response:
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            resp = self._opener.open(req, timeout=self.timeout)
            if stream:
                return _Response(resp.status, resp.headers, None, resp)
            with resp:
                return _Response(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as exc:
            return _Response(exc.code, exc.headers, exc.read())
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLError) and not self.tls_verify and url.startswith("https:"):
                raise _PlainHTTP() from None
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise RegistryError(f"registry {self.ref.registry}: TLS certificate not trusted ({reason.verify_message}); "
                                    "use --tls-verify=false for a registry you trust without it") from None
            if isinstance(reason, ssl.SSLError):
                raise RegistryError(f"registry {self.ref.registry}: TLS failed ({reason.reason or reason}); a plain-HTTP "
                                    "registry needs --tls-verify=false") from None
            raise RegistryError(f"cannot reach registry {self.ref.registry}: {_reason(reason)}") from None
        except (socket.timeout, TimeoutError):
            raise RegistryError(f"registry {self.ref.registry}: no answer within {self.timeout:g} s") from None
        except http.client.HTTPException as exc:
            raise RegistryError(f"registry {self.ref.registry}: not an HTTP answer ({type(exc).__name__})") from None
        except (ConnectionError, OSError) as exc:
            if not self.tls_verify and url.startswith("https:") and isinstance(exc, ConnectionResetError):
                raise _PlainHTTP() from None
            raise RegistryError(f"cannot reach registry {self.ref.registry}: {_reason(exc)}") from None

    def request(self, method: str, path: str, headers: dict | None = None, body=None, push: bool = False,
                stream: bool = False, absolute: bool = False) -> _Response:
        url = path if absolute else self._base() + path
        scope = "pull,push" if push else "pull"
        headers = dict(headers or {})
        if scope in self._authorization:
            headers["Authorization"] = self._authorization[scope]
        resp = self._send(method, url, headers, body, stream)
        if resp.status == 401:
            self._authorization[scope] = self._authorize(resp.headers.get("WWW-Authenticate", ""), scope)
            headers["Authorization"] = self._authorization[scope]
            resp = self._send(method, url, headers, body, stream)
            if resp.status == 401:
                raise RegistryError(f"registry {self.ref.registry}: {self._who()} not allowed to "
                                    f"{'push to' if push else 'pull'} {self.ref.repository}{_detail(resp)}")
        return resp

    def _who(self) -> str:
        return f"user {self.creds[0]!r}" if self.creds else "anonymous access"

    def _authorize(self, challenge: str, scope: str) -> str:
        kind, _, params = challenge.partition(" ")
        kind = kind.lower()
        if kind == "basic":
            if not self.creds:
                raise RegistryError(f"registry {self.ref.registry} needs a login: give --creds USER:PASSWORD or an "
                                    "auth file entry (--authfile)")
            return "Basic " + base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode()
        if kind != "bearer":
            raise RegistryError(f"registry {self.ref.registry}: unsupported authentication {challenge or '(none)'!r}")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        realm = fields.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.ref.registry}: Bearer challenge without a realm ({challenge!r})")
        query = {"scope": f"repository:{self.ref.repository}:{scope}"}
        if fields.get("service"):
            query["service"] = fields["service"]
        headers = {}
        if self.creds:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode()
        resp = self._send("GET", realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query), headers, None)
        if resp.status in (401, 403):
            raise RegistryError(f"registry {self.ref.registry}: token server {realm} refused {self._who()}{_detail(resp)}")
        if resp.status != 200:
            raise RegistryError(f"registry {self.ref.registry}: token server {realm} answered HTTP {resp.status}")
        try:
            answer = json.loads(resp.body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise RegistryError(f"registry {self.ref.registry}: token server {realm} sent no token")
        return f"Bearer {token}"

    # -- the distribution API -------------------------------------------------------------------
    def _repo(self) -> str:
        return f"/v2/{self.ref.repository}"

    def get_manifest(self, reference: str) -> tuple[dict, str, str]:
        """(parsed manifest, media type, digest) of a manifest by tag or digest; a digest is checked against the
        bytes as served."""
        resp = self.request("GET", f"{self._repo()}/manifests/{reference}", {"Accept": ACCEPT})
        if resp.status == 404:
            raise RegistryError(f"{self.ref.name}:{reference}: not found in registry {self.ref.registry}"
                                if not reference.startswith("sha256:") else
                                f"{self.ref.name}@{reference}: not found in registry {self.ref.registry}")
        _expect(resp, 200, f"manifest {reference} of {self.ref.name}")
        digest = "sha256:" + hashlib.sha256(resp.body).hexdigest()
        claimed = resp.headers.get("Docker-Content-Digest")
        if (reference.startswith("sha256:") and digest != reference) or (claimed and claimed.startswith("sha256:")
                                                                          and claimed != digest):
            raise RegistryError(f"manifest {reference} of {self.ref.name}: content has digest {digest}, not "
                                f"{reference if reference.startswith('sha256:') else claimed} (corrupted or tampered "
                                "with); nothing kept")
        try:
            manifest = json.loads(resp.body)
        except ValueError:
            raise RegistryError(f"manifest {reference} of {self.ref.name}: not JSON") from None
        if not isinstance(manifest, dict):
            raise RegistryError(f"manifest {reference} of {self.ref.name}: not a JSON object")
        media = manifest.get("mediaType") or (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        if manifest.get("schemaVersion") == 1:
            raise RegistryError(f"{self.ref.name}:{reference}: Docker schema 1 manifests are not supported")
        if media not in INDEX_TYPES + MANIFEST_TYPES:
            media = OCI_INDEX if "manifests" in manifest else OCI_MANIFEST if "layers" in manifest else media
        if media not in INDEX_TYPES + MANIFEST_TYPES:
            raise RegistryError(f"{self.ref.name}:{reference}: unsupported manifest type {media!r}")
        return manifest, media, digest

    def fetch_blob(self, digest: str, dest: str) -> None:
        """Streams a blob into ``dest``, hashing it on the way; a mismatch removes the file."""
        resp = self.request("GET", f"{self._repo()}/blobs/{digest}", stream=True)
        if resp.stream is None:
            if resp.status == 404:
                raise RegistryError(f"blob {digest} of {self.ref.name}: not found in registry {self.ref.registry}")
            _expect(resp, 200, f"blob {digest} of {self.ref.name}")
        h = hashlib.sha256()
        try:
            with resp.stream, open(dest, "wb") as out:
                for chunk in iter(lambda: resp.stream.read(1 << 20), b""):
                    h.update(chunk)
                    out.write(chunk)
        except (OSError, http.client.HTTPException) as exc:
            _unlink(dest)
            raise RegistryError(f"blob {digest} of {self.ref.name}: download broke off ({_reason(exc)})") from None
        got = "sha256:" + h.hexdigest()
        if got != digest:
            _unlink(dest)
            raise RegistryError(f"blob {digest} of {self.ref.name}: content has digest {got} (corrupted or tampered "
                                "with); nothing kept")

    def has_blob(self, digest: str) -> bool:
        return self.request("HEAD", f"{self._repo()}/blobs/{digest}", push=True).status == 200

    def push_blob(self, digest: str, path: str) -> None:
        """A monolithic upload (POST for a session, then one PUT with the digest), skipped when present."""
        if self.has_blob(digest):
            return
        resp = self.request("POST", f"{self._repo()}/blobs/uploads/", {"Content-Length": "0"}, b"", push=True)
        _expect(resp, 202, f"starting the upload of {digest} to {self.ref.name}")
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {self.ref.registry}: upload of {digest} got no Location")
        url = urllib.parse.urljoin(self._base() + "/", location)
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            resp = self.request("PUT", url, {"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                                fh, push=True, absolute=True)
        _expect(resp, 201, f"uploading {digest} to {self.ref.name}")

    def put_manifest(self, reference: str, body: bytes, media: str) -> str:
        resp = self.request("PUT", f"{self._repo()}/manifests/{reference}", {"Content-Type": media}, body, push=True)
        _expect(resp, 201, f"storing the manifest of {self.ref.name}:{reference}")
        return "sha256:" + hashlib.sha256(body).hexdigest()


class _PlainHTTP(Exception):
    """https was answered by something that does not speak TLS."""


def _expect(resp: _Response, status: int, what: str) -> None:
    if resp.status != status:
        raise RegistryError(f"{what}: registry answered HTTP {resp.status}{_detail(resp)}")


def _detail(resp: _Response) -> str:
    """The first error message of a distribution error body, if there is one."""
    try:
        errors = json.loads(resp.body or b"{}").get("errors") or []
        msg = errors[0].get("message") or errors[0].get("code")
        return f" ({msg})" if msg else ""
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""


def _reason(exc) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]   # "connection refused", as in a sentence
    return str(exc) or type(exc).__name__


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def pick_platform(index: dict, os_name: str = "linux", arch: str | None = None) -> dict:
    """The entry of a manifest list / OCI index for this machine (linux/amd64 here)."""
    from .images import goarch

    arch = arch or goarch()
    entries = index.get("manifests") or []
    for entry in entries:
        platform = entry.get("platform") or {}
        if platform.get("os") == os_name and platform.get("architecture") == arch:
            return entry
    have = ", ".join(f"{(e.get('platform') or {}).get('os', '?')}/{(e.get('platform') or {}).get('architecture', '?')}"
                     for e in entries) or "none"
    raise RegistryError(f"no {os_name}/{arch} image in the manifest list (it has: {have})")
