"""Local image store: images/<name>.json names an ordered list of layers (layers/<id>/, each an extracted
directory used as an overlayfs lowerdir) and the image config (Env, Cmd, Entrypoint, WorkingDir, User).

Imports: a rootfs tar or directory (one layer), an OCI image layout (directory or tar; layers with
whiteouts turned into overlayfs whiteouts and opaque dirs), or a `docker save` tar. The default image
``busybox`` is built from Debian's busybox-static the first time it is asked for.

Layers are written into a temporary directory and renamed into place, so concurrent imports of the same
content (parallel tests, two launchers) end with one complete copy.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time

from .state import storage_root, write_json

# shutil and tempfile are imported in the functions that need them: `pynet run` of an existing image needs
# neither, and they cost ~3 ms of its start-up.

BUSYBOX = "/bin/busybox"
DEFAULT_IMAGE = "busybox"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OPAQUE_XATTR = "trusted.overlay.opaque"
USER_OPAQUE_XATTR = "user.overlay.opaque"


class ImageError(Exception):
    pass


def _dirs():
    root = storage_root()
    return os.path.join(root, "images"), os.path.join(root, "layers")


def normalize(name: str) -> str:
    if not name or any(c.isspace() for c in name) or name.startswith(("-", ".")):
        raise ImageError(f"invalid image name {name!r}")
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote(text: str) -> str:
    """urllib.parse.quote(text, safe=""), byte for byte (the file names of existing stores), without
    importing urllib.parse (~2 ms of every `pynet run`)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


def _image_file(name: str) -> str:
    return os.path.join(_dirs()[0], quote(normalize(name)) + ".json")


def layer_path(layer_id: str) -> str:
    return os.path.join(_dirs()[1], layer_id)


def _mkstore():
    images, layers = _dirs()
    for d in (storage_root(), images, layers):
        os.makedirs(d, mode=0o711, exist_ok=True)


# -- reading ----------------------------------------------------------------------------------------
def get(name: str) -> dict | None:
    try:
        with open(_image_file(name)) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


def ensure(name: str) -> dict:
    """The image record, building the embedded busybox image on first use."""
    image = get(name)
    if image is None and normalize(name) == normalize(DEFAULT_IMAGE):
        image = build_busybox()
    if image is None:
        raise ImageError(f"no such image: {name} (pull it with `pynet pull {name}` or import it with "
                         f"`pynet image import TAR|DIR {name}`)")
    for layer in image["layers"]:
        if not os.path.isdir(layer_path(layer)):
            raise ImageError(f"image {name}: layer {layer} is missing from {_dirs()[1]}")
    return image


def list_images() -> list[dict]:
    images_dir = _dirs()[0]
    out = []
    try:
        names = sorted(os.listdir(images_dir))
    except FileNotFoundError:
        return []
    for entry in names:
        if entry.endswith(".json"):
            with open(os.path.join(images_dir, entry)) as fh:
                out.append(json.load(fh))
    return out


def tag(source: str, target: str) -> dict:
    """Another name for an image: a second record sharing its layers."""
    image = get(source)
    if image is None:
        raise ImageError(f"no such image: {source}")
    normalize(target)
    return save(target, image["layers"], image["config"], image.get("source", ""),
                **{k: v for k, v in image.items() if k not in ("name", "layers", "config", "source", "created")})


def remove(name: str, in_use: set[str] = frozenset()) -> None:
    path = _image_file(name)
    if not os.path.exists(path):
        raise ImageError(f"no such image: {name}")
    os.unlink(path)
    gc_layers(in_use)


def gc_layers(in_use: set[str] = frozenset()) -> list[str]:
    """Removes layers no image and no container (``in_use``) refers to, and their shifted copies."""
    import shutil

    keep = set(in_use)
    for image in list_images():
        keep.update(image["layers"])
    layers_dir = _dirs()[1]
    removed = []
    for entry in os.listdir(layers_dir) if os.path.isdir(layers_dir) else ():
        if entry not in keep and not entry.startswith("."):
            shutil.rmtree(os.path.join(layers_dir, entry), ignore_errors=True)
            removed.append(entry)
    shifted_root = os.path.join(storage_root(), "layers-shifted")
    for base in os.listdir(shifted_root) if os.path.isdir(shifted_root) else ():
        for entry in os.listdir(os.path.join(shifted_root, base)):
            if entry not in keep and not entry.startswith("."):
                shutil.rmtree(os.path.join(shifted_root, base, entry), ignore_errors=True)
    return removed


def size_of(image: dict) -> int:
    total = 0
    for layer in image["layers"]:
        for root, dirs, files in os.walk(layer_path(layer)):
            for f in files:
                try:
                    total += os.lstat(os.path.join(root, f)).st_size
                except OSError:
                    pass
    return total


# -- writing ----------------------------------------------------------------------------------------
def save(name: str, layers: list[str], config: dict, source: str, **extra) -> dict:
    image = {"name": normalize(name), "layers": layers, "config": config, "source": source,
             "created": time.time(), **extra}
    write_json(_image_file(name), image)
    return image


def _commit_layer(tmp: str, layer_id: str) -> str:
    import shutil

    final = layer_path(layer_id)
    try:
        os.rename(tmp, final)
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        shutil.rmtree(tmp, ignore_errors=True)   # someone else committed the same content first
    return layer_id


def scratch_dir() -> str:
    import tempfile

    _mkstore()
    return tempfile.mkdtemp(prefix=".tmp-", dir=_dirs()[1])


def build_busybox() -> dict:
    """A one-layer image from the host's static busybox: the binary, applet links, a minimal /etc."""
    import hashlib
    import shutil
    if not os.path.exists(BUSYBOX):
        raise ImageError(f"default image needs {BUSYBOX} (Debian package busybox-static)")
    with open(BUSYBOX, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    layer_id = f"busybox-{digest[:24]}"
    if not os.path.isdir(layer_path(layer_id)):
        tmp = scratch_dir()
        try:
            _populate_busybox(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _commit_layer(tmp, layer_id)
    config = {"Env": [DEFAULT_PATH], "Cmd": ["sh"], "Entrypoint": [], "WorkingDir": "/"}
    return save(DEFAULT_IMAGE, [layer_id], config, f"{BUSYBOX} (busybox-static)")


def _populate_busybox(root: str) -> None:
    import shutil
    import subprocess

    os.chmod(root, 0o755)
    for d, mode in (("bin", 0o755), ("sbin", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755),
                    ("etc", 0o755), ("dev", 0o755), ("proc", 0o555), ("sys", 0o555), ("tmp", 0o1777),
                    ("var/tmp", 0o1777), ("run", 0o755), ("root", 0o700), ("home", 0o755)):
        os.makedirs(os.path.join(root, d), exist_ok=True)
        os.chmod(os.path.join(root, d), mode)
    shutil.copy2(BUSYBOX, os.path.join(root, "bin/busybox"))
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout
    for rel in applets.split():
        dest = os.path.join(root, rel)
        if rel == "bin/busybox" or os.path.lexists(dest):
            continue
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.symlink("/bin/busybox", dest)
    files = {
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        "etc/group": "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
        "etc/hostname": "", "etc/hosts": "", "etc/resolv.conf": "",
    }
    for rel, text in files.items():
        with open(os.path.join(root, rel), "w") as fh:
            fh.write(text)


def import_image(source: str, name: str) -> dict:
    """``pynet image import``: a rootfs dir/tar, an OCI layout dir/tar, or a `docker save` tar."""
    import hashlib
    import shutil
    import tarfile
    import tempfile

    normalize(name)
    _mkstore()
    if os.path.isdir(source):
        if os.path.exists(os.path.join(source, "oci-layout")):
            return _import_oci(source, name, source)
        tmp = scratch_dir()
        try:
            copy_tree(source, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        layer_id = "dir-" + hashlib.sha256(f"{os.path.realpath(source)}:{time.time()}".encode()).hexdigest()[:24]
        _commit_layer(tmp, layer_id)
        return save(name, [layer_id], {"Env": [DEFAULT_PATH], "Cmd": ["sh"]}, source)
    if not os.path.isfile(source):
        raise ImageError(f"{source}: no such file or directory")
    try:
        with tarfile.open(source) as tf:
            names = set(tf.getnames())
    except tarfile.TarError as exc:
        raise ImageError(f"{source}: not a tar archive ({exc})") from None
    names = {n.lstrip("./") for n in names}
    if "oci-layout" in names or "manifest.json" in names:
        with tempfile.TemporaryDirectory(prefix=".tmp-unpack-", dir=_dirs()[1]) as unpack:
            with tarfile.open(source) as tf:
                for member in tf.getmembers():
                    rel = _safe_name(member.name)
                    if rel and (member.isfile() or member.isdir()) and _parent_is_plain(unpack, rel):
                        member.name = rel
                        tf.extract(member, unpack, set_attrs=False)
            if "oci-layout" in names:
                return _import_oci(unpack, name, source)
            return _import_docker_save(unpack, name, source)
    layer_id = extract_layer_file(source)
    return save(name, [layer_id], {"Env": [DEFAULT_PATH], "Cmd": ["sh"]}, source)


def _file_digest(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def extract_layer_file(path: str, layer_id: str | None = None) -> str:
    import shutil
    import tarfile

    layer_id = layer_id or _file_digest(path)
    if os.path.isdir(layer_path(layer_id)):
        return layer_id
    tmp = scratch_dir()
    try:
        os.chmod(tmp, 0o755)
        with open(path, "rb") as fh:
            zstd = _compression(fh) == "zstd"
        if zstd:
            path = _unzstd(path, tmp + ".tar")
        try:
            with tarfile.open(path) as tf:   # transparent gzip/bzip2/xz
                extract_layer(tf, tmp)
        finally:
            if zstd:
                os.unlink(path)
    except tarfile.TarError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ImageError(f"layer {layer_id}: not a tar archive ({exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _commit_layer(tmp, layer_id)


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _compression(fh) -> str | None:
    """The compression binary file ``fh`` starts with: "gzip", "zstd" or None (plain, or one tarfile detects
    itself); ``fh`` is left at its start."""
    magic = fh.read(4)
    fh.seek(0)
    return "gzip" if magic[:2] == b"\x1f\x8b" else "zstd" if magic == ZSTD_MAGIC else None


def _unzstd(path: str, dest: str) -> str:
    """tarfile reads no zstd (before Python 3.14): the layer is decompressed next to its extraction dir."""
    import zstandard

    try:
        with open(path, "rb") as src, open(dest, "wb") as out:
            zstandard.ZstdDecompressor().copy_stream(src, out)
    except zstandard.ZstdError as exc:
        os.unlink(dest)
        raise ImageError(f"{path}: broken zstd data ({exc})") from None
    return dest


def diff_id(path: str) -> str:
    """The digest of a layer blob's uncompressed tar (gzip, zstd or plain): what an image config's
    rootfs.diff_ids lists."""
    import gzip
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as raw:
        compression = _compression(raw)
        if compression == "gzip":
            stream = gzip.GzipFile(fileobj=raw)
        elif compression == "zstd":
            import zstandard

            stream = zstandard.ZstdDecompressor().stream_reader(raw)
        else:
            stream = raw
        try:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                h.update(chunk)
        except (OSError, EOFError, ValueError) as exc:   # gzip.BadGzipFile, zstandard.ZstdError
            raise ImageError(f"{path}: broken compressed data ({exc})") from None
    return f"sha256:{h.hexdigest()}"


def write_layer_tar(layer_id: str, dest: str) -> tuple[str, int, str]:
    """Packs a stored layer as an OCI tar+gzip at ``dest``, overlayfs whiteouts turned back into .wh. files:
    (digest of the gzip, its size, diff_id = digest of the tar). Same tree, same bytes (sorted, mtime 0 gzip)."""
    import gzip
    import hashlib
    import tarfile

    root = layer_path(layer_id)
    diff = hashlib.sha256()
    packed = hashlib.sha256()
    with open(dest, "wb") as raw:   # one pass: tar -> (hash) -> gzip -> (hash) -> dest
        with gzip.GzipFile(fileobj=_Hashing(raw, packed), mode="wb", mtime=0) as gz:
            with tarfile.open(fileobj=_Hashing(gz, diff), mode="w|", format=tarfile.PAX_FORMAT) as tf:
                _add_tree(tf, root, "")
    return f"sha256:{packed.hexdigest()}", os.path.getsize(dest), f"sha256:{diff.hexdigest()}"


class _Hashing:
    def __init__(self, out, h):
        self.out, self.h = out, h

    def write(self, data):
        self.h.update(data)
        return self.out.write(data)

    def flush(self):
        self.out.flush()


def _add_tree(tf, root: str, rel: str) -> None:
    import tarfile

    def anonymous(info):
        info.uname = info.gname = ""
        return info

    for entry in sorted(os.scandir(os.path.join(root, rel) if rel else root), key=lambda e: e.name):
        name = f"{rel}/{entry.name}" if rel else entry.name
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:   # overlayfs whiteout -> OCI whiteout file
            info = anonymous(tarfile.TarInfo(f"{rel}/.wh.{entry.name}" if rel else f".wh.{entry.name}"))
            info.mtime = int(st.st_mtime)
            tf.addfile(info)
            continue
        if stat.S_ISSOCK(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            continue
        tf.add(entry.path, arcname=name, recursive=False, filter=anonymous)
        if stat.S_ISDIR(st.st_mode):
            try:
                opaque = os.getxattr(entry.path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
            except OSError:
                opaque = False
            if opaque:
                info = anonymous(tarfile.TarInfo(f"{name}/.wh..wh..opq"))
                info.mtime = int(st.st_mtime)
                tf.addfile(info)
            _add_tree(tf, root, name)


def _blob(layout: str, digest: str) -> str:
    algo, _, hexd = digest.partition(":")
    path = os.path.join(layout, "blobs", algo, hexd)
    if not os.path.isfile(path):
        raise ImageError(f"OCI layout {layout}: blob {digest} missing")
    return path


def _load_json(path: str):
    import gzip

    with open(path, "rb") as fh:
        data = fh.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return json.loads(data)


def _import_oci(layout: str, name: str, source: str) -> dict:
    index = _load_json(os.path.join(layout, "index.json"))
    manifests = index.get("manifests") or []
    if not manifests:
        raise ImageError(f"OCI layout {source}: index.json lists no manifest")
    want = name.rsplit(":", 1)[-1] if ":" in name.rsplit("/", 1)[-1] else None
    chosen = manifests[0]
    for m in manifests:
        ref = (m.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        if want and ref == want:
            chosen = m
    manifest = _load_json(_blob(layout, chosen["digest"]))
    if "manifests" in manifest:   # an image index: take the first entry for this architecture
        entry = next((m for m in manifest["manifests"]
                      if (m.get("platform") or {}).get("architecture") in (None, goarch())), manifest["manifests"][0])
        manifest = _load_json(_blob(layout, entry["digest"]))
    config = {}
    if manifest.get("config"):
        config = _load_json(_blob(layout, manifest["config"]["digest"])).get("config") or {}
    layers = []
    for layer in manifest.get("layers", []):
        layers.append(extract_layer_file(_blob(layout, layer["digest"]), layer["digest"].replace(":", "-")))
    return save(name, layers, image_config(config), source)


def _import_docker_save(unpack: str, name: str, source: str) -> dict:
    manifest = _load_json(os.path.join(unpack, "manifest.json"))[0]
    config = _load_json(os.path.join(unpack, manifest["Config"])).get("config") or {}
    layers = [extract_layer_file(os.path.join(unpack, rel)) for rel in manifest["Layers"]]
    return save(name, layers, image_config(config), source)


def image_config(config: dict) -> dict:
    return {"Env": config.get("Env") or [DEFAULT_PATH], "Cmd": config.get("Cmd") or [],
            "Entrypoint": config.get("Entrypoint") or [], "WorkingDir": config.get("WorkingDir") or "/",
            "User": config.get("User") or ""}


def goarch() -> str:
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


# -- layer extraction ------------------------------------------------------------------------------
def _safe_name(name: str) -> str | None:
    """A member name relative to the layer root, or None when it would escape it."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def _parent_is_plain(root: str, rel: str) -> bool:
    """No directory on the way to ``rel`` is a symlink (an archive must not write through one)."""
    path = root
    for part in rel.split("/")[:-1]:
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return True
        if stat.S_ISLNK(st.st_mode):
            return False
    return True


def extract_layer(tf, root: str) -> None:
    """Unpacks one layer, translating OCI whiteouts (.wh.NAME, .wh..wh..opq) to overlayfs form. Directory
    times are set last (as tarfile's extractall does): entries written into a directory change its mtime,
    and a layer packed again (`pynet push`) must come out byte for byte the same."""
    dir_times = []
    for member in tf:
        rel = _safe_name(member.name)
        if not rel or not _parent_is_plain(root, rel):
            continue
        dirname, base = os.path.split(rel)
        parent = os.path.join(root, dirname)
        if base.startswith(".wh."):
            os.makedirs(parent, exist_ok=True)
            if base == ".wh..wh..opq":
                os.setxattr(parent, OPAQUE_XATTR, b"y")
            else:
                target = os.path.join(parent, base[4:])
                _remove(target)
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
                os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
            continue
        if member.ischr() or member.isblk():
            continue   # device nodes come from the runtime's /dev, never from an image
        if member.islnk():
            link = _safe_name(member.linkname)
            if not link or not _parent_is_plain(root, link + "/x"):
                continue   # a hard link reaching through a symlink would expose a host file
            member.linkname = link
        member.name = rel
        dest = os.path.join(root, rel)
        if not member.isdir() and os.path.lexists(dest):
            _remove(dest)
        tf.extract(member, root, set_attrs=True, numeric_owner=True)
        if member.isdir():
            dir_times.append((dest, member.mtime))
        elif member.issym():   # tarfile leaves a symlink's own time at "now"
            os.utime(dest, (member.mtime, member.mtime), follow_symlinks=False)
    for path, mtime in reversed(dir_times):
        os.utime(path, (mtime, mtime), follow_symlinks=False)


def _remove(path: str) -> None:
    import shutil

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


# -- copying (directory imports, user-namespace shifted layers) ------------------------------------
def copy_tree(src: str, dst: str, shift: int = 0, user_xattrs: bool = False) -> None:
    """Copies a tree keeping type, mode, owner (+shift), times, whiteouts and the opaque xattr; with
    ``user_xattrs`` the opaque marker is written as user.overlay.opaque (for userxattr overlay mounts)."""
    import shutil

    st = os.lstat(src)
    os.makedirs(dst, exist_ok=True)
    _copy_meta(src, dst, st, shift, user_xattrs)
    for entry in os.scandir(src):
        s, d = entry.path, os.path.join(dst, entry.name)
        st = entry.stat(follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            copy_tree(s, d, shift, user_xattrs)
            continue
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISREG(mode):
            shutil.copyfile(s, d, follow_symlinks=False)
        elif stat.S_ISCHR(mode) and st.st_rdev == 0:
            os.mknod(d, stat.S_IFCHR | 0o000, 0)   # whiteout
        elif stat.S_ISFIFO(mode):
            os.mkfifo(d)
        else:
            continue
        _copy_meta(s, d, st, shift, user_xattrs)


def _copy_meta(src, dst, st, shift, user_xattrs) -> None:
    os.lchown(dst, st.st_uid + shift, st.st_gid + shift)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
        if stat.S_ISDIR(st.st_mode):
            try:
                if os.getxattr(src, OPAQUE_XATTR) == b"y":
                    os.setxattr(dst, USER_OPAQUE_XATTR if user_xattrs else OPAQUE_XATTR, b"y")
            except OSError:
                pass
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def shifted_layers(layers: list[str], base: int) -> list[str]:
    """Copies of ``layers`` owned by host uid/gid ``base`` + original, so that root in a user namespace
    mapped at ``base`` owns its image files (what Docker's userns-remap does with its own layer store)."""
    import shutil
    import tempfile

    out = []
    for layer in layers:
        final = os.path.join(storage_root(), "layers-shifted", str(base), layer)
        if not os.path.isdir(final):
            parent = os.path.dirname(final)
            os.makedirs(parent, mode=0o711, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
            try:
                copy_tree(layer_path(layer), tmp, shift=base)
                os.rename(tmp, final)
            except OSError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        out.append(final)
    return out
