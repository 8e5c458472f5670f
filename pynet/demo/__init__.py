"""`make demo`: the whole pynet stack, end to end, in network namespaces this program creates.

Part 1 runs pynet's CNI plugins as a runtime does (a bridge network, two container netns, reachability).
Part 2 uses the `pynet` command line: networks, the container launcher with a published port, attaching a
second interface to a running container, and teardown. The machine's own network is never touched;
teardown runs also when a step fails. Exit status 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from netns_fixtures import OUR_PLUGINS

from .bridge import BridgeDemo
from .stack import StackDemo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pynet.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", default=OUR_PLUGINS, metavar="DIR",
                        help="CNI_PATH to use (default: pynet's plugins; /usr/lib/cni runs the reference ones)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("pynet demo: must run as root (it creates network namespaces)", file=sys.stderr)
        return 1
    print("== part 1: CNI plugins, as a container runtime calls them ==", flush=True)
    with tempfile.TemporaryDirectory(prefix="pynet-demo-") as data_dir:
        part1 = BridgeDemo(args.plugins, data_dir)
        part1.run()
    print("== part 2: the pynet command line: networks, containers, published port, attach/detach ==", flush=True)
    part2 = StackDemo(args.plugins, first_step=part1.step + 1)
    part2.run()
    if part1.ok and part2.ok:
        print("demo passed: containers reach each other and the gateway over CNI; httpd in a pynet container "
              "answers through its published port; attach/detach added and removed a second interface; "
              "nothing left behind", flush=True)
        return 0
    failed = [name for name, part in (("part 1", part1), ("part 2", part2)) if not part.ok]
    print(f"demo FAILED ({', '.join(failed)})", flush=True)
    return 1
