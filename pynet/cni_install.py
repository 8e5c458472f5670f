"""`pynet cni install DIR`: puts pynet's plugin executables where a runtime looks for them (e.g. /opt/cni/bin);
and write_script, the lean `pynet` executable scripts/install.sh puts in the venv.

Each executable is the native shim (cni_plugins/shim/pynet-cni-shim.c, built by scripts/install.sh with
the system compiler into ``<venv>/libexec/pynet-cni/shim``), copied once per plugin name: it answers
VERSION itself, hands every other request to the daemon, and without a daemon execs the Python plugin
script of the same name in ``<venv>/libexec/pynet-cni/``. Where no shim was built (no compiler), the
executables are those Python scripts themselves.

Runtimes call plugins with a bare environment (no venv, no PYTHONPATH), so each script's shebang is this
venv's interpreter, absolute, in isolated mode without site (``-IS``: no user site, no environment
variables, no script directory on sys.path), which still finds pynet through the venv's site-packages.
"""

from __future__ import annotations

import os
import sys

from cni_plugins import registry
from cni_plugins.files import atomic_write

# -IS is -I -S (a shebang passes one argument): no environment variables, no user site, no site module.
# Runtimes start a plugin for every verb, and site (with the .pth files of a --system-site-packages venv)
# costs a few ms each time; the directories it would add are written into the script at install time.
_TEMPLATE = """#!{python} -IS
# Installed by `pynet cni install`; runs pynet's {name} CNI plugin.
import sys
sys.path[1:1] = {paths!r}
from cni_plugins.main import run
run({name!r})
"""


def import_paths() -> list[str]:
    """What site gave this interpreter beyond the standard library: pynet's own tree, the venv's
    site-packages and Debian's dist-packages (python3-nftables, python3-seccomp)."""
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [project]
    for entry in sys.path:
        if entry and ("site-packages" in entry or "dist-packages" in entry) and os.path.isdir(entry):
            if entry not in paths:
                paths.append(entry)
    return paths


def interpreter() -> str:
    # Not resolved through symlinks: the venv's own bin/python is what makes its site-packages visible.
    return os.path.abspath(sys.executable)


def libexec_dir() -> str:
    """Where the Python plugin scripts and the built shim live; the shim has this path compiled in."""
    return os.path.join(os.path.dirname(registry.bin_dir()), "libexec", "pynet-cni")


def shim_path() -> str:
    return os.path.join(libexec_dir(), "shim")


def _write_scripts(directory: str) -> list[str]:
    python = interpreter()
    paths = import_paths()
    written = []
    for name in registry.NAMES:
        target = os.path.join(directory, name)
        atomic_write(target, _TEMPLATE.format(python=python, name=name, paths=paths), mode=0o755,
                     prefix=f".{name}.")
        os.chmod(target, 0o755)   # whatever the umask took off
        written.append(target)
    return written


def install(directory: str, shim: bool = True) -> list[str]:
    """Writes one executable per plugin into ``directory`` (created if needed); returns their paths.

    Each file is replaced atomically, so a runtime calling a plugin during an upgrade sees the old or
    the new executable, never half of one. ``shim``: use the native shim when it was built.
    """
    os.makedirs(directory, exist_ok=True)
    os.makedirs(libexec_dir(), exist_ok=True)
    _write_scripts(libexec_dir())   # what the shim falls back to
    if not (shim and os.access(shim_path(), os.X_OK)):
        written = _write_scripts(directory)
    else:
        with open(shim_path(), "rb") as f:
            binary = f.read()
        written = []
        for name in registry.NAMES:
            target = os.path.join(directory, name)
            atomic_write(target, binary, mode=0o755, prefix=f".{name}.")
            os.chmod(target, 0o755)
            written.append(target)
    registry.record_installed_dir(directory)
    return written


# The same for the `pynet` command itself: site (its .pth processing, ~3 ms) is skipped and its
# directories written in. The console script pip writes for `pynet` cannot do this.
_PYNET_SCRIPT = """#!{python} -IS
# pynet's command line, started without site; written by pynet.cni_install.write_script.
import sys
sys.path[1:1] = {paths!r}
from pynet.cli import main
sys.exit(main())
"""


def write_script(path: str) -> str:
    """Writes a lean `pynet` executable (every command; `run` starts ~3 ms sooner than through pip's
    console script) to ``path``, atomically; returns the path. scripts/install.sh puts it in place of
    pip's .venv/bin/pynet."""
    atomic_write(path, _PYNET_SCRIPT.format(python=interpreter(), paths=import_paths()), mode=0o755)
    os.chmod(path, 0o755)
    return path


def _run_install(args) -> int:
    for path in install(args.directory, shim=not args.no_shim):
        print(path)
    return 0


def register(subparsers) -> None:
    cni = subparsers.add_parser("cni", help="CNI plugin management")
    cni_sub = cni.add_subparsers(dest="cni_command", metavar="COMMAND")
    cni.set_defaults(func=lambda args: (cni.print_help(), 2)[1])
    inst = cni_sub.add_parser("install", help="install pynet's CNI plugin executables into DIR",
                              description="Writes bridge, host-local, static, loopback, portmap, firewall and tuning "
                                          "into DIR (e.g. /opt/cni/bin), each bound to this installation's Python.")
    inst.add_argument("directory", metavar="DIR")
    inst.add_argument("--no-shim", action="store_true",
                      help="install the Python plugin scripts even where the native shim was built")
    inst.set_defaults(func=_run_install)
