#!/usr/bin/env bash
# The opencontainers/runtime-tools validation suite (upstream commit 0105384, the one Debian's
# golang-github-opencontainers-runtime-tools-dev packages) against runc and pynet-oci, side by side.
#
#   scripts/oci-validation.sh [--src DIR] [--timeout SECONDS] [--runtime runc|pynet-oci] [PROGRAM...]
#
# Builds cmd/runtimetest and every validation/<program> with Debian's Go, offline (the upstream tree's
# vendor/ directory; GOPROXY=off), into build/oci-validation/bin. The source is DIR, or the tree
# `git archive`d from the runtime-tools mirror the `fetch` tool makes (OCI_VALIDATION_MIRROR).
# Then runs each program once per runtime, each in its own temporary directory, with a timeout, and
# prints a table and the pass counts; each program's TAP output is kept in build/oci-validation/results.
#
# Safety: the runs happen in a fresh network namespace and a mount namespace that receives the host's
# mounts (the cgroup hierarchies stay visible) but sends none back; each runtime keeps its state in the
# run's temporary directory (a wrapper passes --root), and every container left behind is deleted.
set -euo pipefail
{   # read whole before it runs: editing this file during a run cannot derail the run

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${OCI_VALIDATION_CACHE:-$REPO/build/oci-validation}
COMMIT=0105384
MIRROR=${OCI_VALIDATION_MIRROR:-/work/.mirror/opencontainers+runtime-tools/repo}
TIMEOUT=60
SRC=""
ONLY=""
PROGRAMS=()

while (($#)); do
    case $1 in
        --src) SRC=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --runtime) ONLY=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "oci-validation: unknown option $1" >&2; exit 2 ;;
        *) PROGRAMS+=("$1"); shift ;;
    esac
done

# RUNC and PYNET_OCI name other builds (e.g. pynet-oci of another commit) to compare.
declare -A RUNTIME_BIN=([runc]=${RUNC:-$(command -v runc || true)} [pynet-oci]=${PYNET_OCI:-$REPO/.venv/bin/pynet-oci})
RUNTIME_NAMES=(runc pynet-oci)
if [[ -n $ONLY ]]; then
    [[ -n ${RUNTIME_BIN[$ONLY]+x} ]] || { echo "oci-validation: --runtime $ONLY: expected runc or pynet-oci" >&2; exit 2; }
    RUNTIME_NAMES=("$ONLY")
fi
for name in "${RUNTIME_NAMES[@]}"; do
    [[ -x ${RUNTIME_BIN[$name]} ]] || { echo "oci-validation: $name not found (${RUNTIME_BIN[$name]:-not on PATH}); runc: apt-get install runc, pynet-oci: make install-test" >&2; exit 1; }
done

# -- build (outside the namespaces: the results are kept) -------------------------------------------------
source_tree() {
    if [[ -n $SRC ]]; then
        [[ -d $SRC/validation && -d $SRC/vendor ]] || { echo "oci-validation: --src $SRC: not a runtime-tools tree with validation/ and vendor/" >&2; exit 1; }
        (cd "$SRC" && pwd)
        return
    fi
    local tree=$CACHE/src-$COMMIT
    if [[ ! -f $tree/.complete ]]; then
        git --git-dir="$MIRROR" cat-file -e "$COMMIT^{commit}" 2>/dev/null || {
            echo "oci-validation: no runtime-tools source: give --src DIR, or fetch github:opencontainers/runtime-tools (mirror expected at $MIRROR)" >&2; exit 1; }
        rm -rf "$tree" && mkdir -p "$tree"
        git --git-dir="$MIRROR" archive "$COMMIT" | tar -x -C "$tree"
        touch "$tree/.complete"
    fi
    echo "$tree"
}

build() {
    local src=$1 bin=$CACHE/bin
    command -v go >/dev/null || { echo "oci-validation: no Go compiler: apt-get install golang-go" >&2; exit 1; }
    mkdir -p "$bin"
    if [[ -f $bin/.source && $(cat "$bin/.source") == "$src" && -x $bin/runtimetest ]]; then
        return
    fi
    echo "building runtimetest and the validation programs from $src ..." >&2
    export GOFLAGS=-mod=vendor GOPROXY=off GOCACHE=$CACHE/gocache GO111MODULE=on
    # runtimetest runs inside the containers' busybox rootfs: static, as upstream's Makefile builds it.
    (cd "$src" && go build -tags "netgo osusergo" -ldflags "-extldflags -static" -o "$bin/runtimetest" ./cmd/runtimetest)
    local dir
    for dir in "$src"/validation/*/; do
        dir=${dir%/}
        [[ ${dir##*/} == util ]] && continue
        (cd "$src" && go build -o "$bin/${dir##*/}.t" "./validation/${dir##*/}")
    done
    cp "$src/rootfs-amd64.tar.gz" "$bin/"
    echo "$src" > "$bin/.source"
}

if [[ -z ${OCI_VALIDATION_INNER:-} ]]; then
    [[ $(id -u) == 0 ]] || { echo "oci-validation: needs root (runtimes create namespaces and cgroups)" >&2; exit 1; }
    build "$(source_tree)"
    # A fresh netns, ipc and uts namespace, and a mount namespace that is a slave of the host's: nothing
    # mounted in it leaks out. Programs like linux_ns_itype run containers in the caller's namespaces:
    # the runtime then mounts (and sets propagation, hostname, message queues) in these, not the host's.
    exec unshare --net --ipc --uts --mount --propagation slave -- \
        env OCI_VALIDATION_INNER=1 RUNC="${RUNTIME_BIN[runc]}" PYNET_OCI="${RUNTIME_BIN[pynet-oci]}" "$0" --timeout "$TIMEOUT" ${ONLY:+--runtime "$ONLY"} "${PROGRAMS[@]}"
fi

# -- run (inside the namespaces) -------------------------------------------------------------------------
BIN=$CACHE/bin
RESULTS=${OCI_VALIDATION_RESULTS:-$CACHE/results}
WORK=$(mktemp -d /tmp/oci-validation.XXXXXX)

delete_leftovers() {   # every container a program left in the runtime's state root
    local wrapper=$1 state=$2 cid
    [[ -d $state ]] || return 0
    for cid in $(ls "$state"); do
        timeout 30 "$wrapper" delete --force "$cid" >/dev/null 2>&1 || true
    done
}

unmount_under() {   # mounts a container in the caller's mount namespace left in its bundle, deepest first
    local dir=$1 target
    awk -v under="$dir/" 'index($5, under) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r target; do
        umount -l "$target" 2>/dev/null || true
    done
}

# The relative-cgroupsPath programs use testdir/cgrouptest/container: runtimes remove only the leaf.
SUITE_CGROUPS=()
for dir in /sys/fs/cgroup/*/; do
    [[ -e ${dir}testdir ]] || SUITE_CGROUPS+=("${dir}testdir/cgrouptest" "${dir}testdir")
done

cleanup() {
    local name dir
    for name in "${RUNTIME_NAMES[@]}"; do
        delete_leftovers "$WORK/$name" "$WORK/state-$name"
    done
    for dir in "${SUITE_CGROUPS[@]}"; do   # made by this run; rmdir leaves a cgroup in use alone
        [[ -d $dir ]] && rmdir "$dir" 2>/dev/null
    done
    unmount_under "$WORK"
    rm -rf "$WORK" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # an interrupted run cleans up too
# linux_cgroups_network takes the first two interfaces it finds: a veth pair of this netns besides lo.
ip link add oci-val0 type veth peer name oci-val1 2>/dev/null || true

for name in "${RUNTIME_NAMES[@]}"; do
    # RUNTIME is exec'd as one path by the suite: a wrapper keeps the runtime's state in $WORK.
    printf '#!/bin/sh\nexec %q --root %q "$@"\n' "${RUNTIME_BIN[$name]}" "$WORK/state-$name" > "$WORK/$name"
    chmod +x "$WORK/$name"
    mkdir -p "$RESULTS/$name"
done

if ((${#PROGRAMS[@]} == 0)); then
    for t in "$BIN"/*.t; do PROGRAMS+=("$(basename "$t" .t)"); done
fi

# The programs report in three ways: TAP ok/not ok lines; an empty plan "1..0", with an "error"
# diagnostic when it failed (the hook programs); and the *_fail programs, which exit 0 without TAP when
# the runtime refused their bad config (and exit 1 when it accepted it). Any other exit status fails.
verdict() {
    local prog=$1 tap=$2 code=$3
    if ((code == 124 || code == 137)); then echo timeout
    elif ((code != 0)) || grep -q '^not ok' "$tap"; then echo fail
    elif grep -q '^ok' "$tap"; then
        if awk '/^ok/ && tolower($0) !~ /# skip/ {ran = 1} END {exit !ran}' "$tap"; then echo pass; else echo skip; fi
    elif grep -q '^1\.\.0' "$tap"; then
        if grep -q '"error"' "$tap"; then echo fail; else echo pass; fi
    elif [[ $prog == *_fail ]]; then echo pass
    else echo fail
    fi
}

declare -A VERDICT PASSED
for name in "${RUNTIME_NAMES[@]}"; do PASSED[$name]=0; done
for prog in "${PROGRAMS[@]}"; do
    [[ -x $BIN/$prog.t ]] || { echo "oci-validation: no program $prog (see $BIN)" >&2; exit 1; }
    for name in "${RUNTIME_NAMES[@]}"; do
        dir=$WORK/$name-$prog
        mkdir -p "$dir/tmp"
        # PrepareBundle untars rootfs-amd64.tar.gz and copies runtimetest (a symlink would be copied as
        # one, dangling inside the container) from the working directory.
        cp "$BIN/runtimetest" "$dir/"
        ln -s "$BIN/rootfs-amd64.tar.gz" "$dir/"
        code=0
        (cd "$dir" && RUNTIME=$WORK/$name TMPDIR=$dir/tmp timeout -k 5 "$TIMEOUT" "$BIN/$prog.t") \
            > "$RESULTS/$name/$prog.tap" 2>&1 || code=$?
        echo "# exit status $code" >> "$RESULTS/$name/$prog.tap"
        delete_leftovers "$WORK/$name" "$WORK/state-$name"
        VERDICT[$name,$prog]=$(verdict "$prog" "$RESULTS/$name/$prog.tap" "$code")
        [[ ${VERDICT[$name,$prog]} == pass ]] && PASSED[$name]=$((PASSED[$name] + 1))
        unmount_under "$dir"
        rm -rf "$dir" 2>/dev/null || echo "oci-validation: could not remove $dir" >&2
    done
done

printf '%-40s' program; printf ' %-10s' "${RUNTIME_NAMES[@]}"; echo
for prog in "${PROGRAMS[@]}"; do
    printf '%-40s' "$prog"
    for name in "${RUNTIME_NAMES[@]}"; do printf ' %-10s' "${VERDICT[$name,$prog]}"; done
    echo
done
for name in "${RUNTIME_NAMES[@]}"; do
    echo "$name: ${PASSED[$name]} of ${#PROGRAMS[@]} pass"
done
echo "TAP output of each run: $RESULTS/<runtime>/<program>.tap"
exit
}
