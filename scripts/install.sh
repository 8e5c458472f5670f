#!/usr/bin/env bash
# Sets up everything pynet needs on a Debian machine, as root: Debian packages, then a venv made from
# Debian's /usr/bin/python3 (the interpreter python3-nftables is built for) holding pynet and its deps.
# Idempotent: packages already present are not reinstalled, an up-to-date venv is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"   # "test" adds the test dependencies

APT_PACKAGES=(iproute2 nftables python3-nftables python3-venv python3-pip containernetworking-plugins conntrack busybox-static podman runc graphviz python3-seccomp time etcd-server containerd dnsmasq-base iperf3 curl docker-registry skopeo apache2-utils openssl python3-zstandard)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Packages such as etcd-server and containerd ship services: none of them may start on this machine's
    # own network namespace (the tests start their own, inside sandbox namespaces). policy-rc.d says so to
    # Debian's maintainer scripts for the length of the install, unless the machine already has one.
    policy=/usr/sbin/policy-rc.d
    own_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && own_policy=1
    fi
    trap '[ -z "$own_policy" ] || rm -f "$policy"' EXIT
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -z "$own_policy" ] || rm -f "$policy"
    own_policy=""
fi

VENV=.venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import nftables' 2>/dev/null; then
    echo "==> creating $VENV from /usr/bin/python3 (with Debian's site packages for python3-nftables)"
    rm -rf "$VENV"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

stamp="$VENV/.installed${EXTRAS:+-$EXTRAS}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "==> installing pynet into $VENV${EXTRAS:+ with [$EXTRAS]}"
    spec="."
    [ -n "$EXTRAS" ] && spec=".[$EXTRAS]"
    "$VENV/bin/pip" install --disable-pip-version-check -q -e "$spec" --config-settings editable_mode=compat 2> >(grep -v "^WARNING: Location" >&2)
    touch "$stamp"
fi
# pip's console scripts for `pynet` and `pynet-oci` start with site (and the venv's .pth files): replace
# them with lean ones, -IS with the paths written in (each `pynet run` pays for it). Rewritten by every
# install, so an updated checkout never runs a script written by older code. The plugins: see the end.
"$VENV/bin/python" -c 'import sys; from pynet.cni_install import write_script; write_script(sys.argv[1])' "$VENV/bin/pynet"
"$VENV/bin/python" -c 'import sys; from pynet.oci.cli import write_script; write_script(sys.argv[1])' "$VENV/bin/pynet-oci"

# The native plugin front door (cni_plugins/shim): built with the system compiler when there is one,
# with the directory of the Python plugin scripts it falls back to compiled in. Without a compiler the
# plugin executables stay Python scripts (same results, ~7 ms more per call).
SHIM_SRC=cni_plugins/shim/pynet-cni-shim.c
SHIM="$VENV/libexec/pynet-cni/shim"
if [ ! -x "$SHIM" ] || [ "$SHIM_SRC" -nt "$SHIM" ]; then
    if command -v cc >/dev/null 2>&1; then
        echo "==> building the native CNI shim"
        mkdir -p "$(dirname "$SHIM")"
        cc -O2 -Wall -o "$SHIM.tmp" -DPYNET_FALLBACK_DIR="\"$(pwd)/$VENV/libexec/pynet-cni\"" "$SHIM_SRC"
        mv "$SHIM.tmp" "$SHIM"
    else
        echo "==> no C compiler (cc): the CNI plugin executables stay Python scripts"
    fi
fi

# The plugin executables, every time (a fraction of a second): a plugin added since the last install gets
# its executable, and every one is the shim once it is built.
"$VENV/bin/pynet" cni install "$VENV/bin" >/dev/null
