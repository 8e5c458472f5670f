"""What the `pynet` command groups share: the user-facing error, the location options every runtime
command takes (read into a Runner/Attachments by pynet.runner.locations) and the JSON/table output."""

from __future__ import annotations

import sys


class CommandError(Exception):
    """A user-facing failure: printed as one line (or JSON with --json), exit status 1 (``exit_code``)."""

    exit_code = 1


def fail(err: Exception):
    """Re-raises a CNIError (or a flag-value error) as the CommandError of its message."""
    raise CommandError(str(err)) from None


def location_options():
    """An argparse parent parser: --config-dir, --cache-dir, --cni-path, --netns-dir and --json."""
    import argparse

    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("locations (also PYNET_CONFIG_DIR, PYNET_CACHE_DIR, PYNET_CNI_PATH, PYNET_NETNS_DIR)")
    # SUPPRESS: an option left out does not overwrite the same option given before the sub-command
    # (should `pynet --config-dir X attach ...` be declared on the top-level parser too).
    g.add_argument("--config-dir", default=argparse.SUPPRESS, help="network definitions (default /etc/cni/net.d)")
    g.add_argument("--cache-dir", default=argparse.SUPPRESS, help="libcni cache dir (default /var/lib/cni)")
    g.add_argument("--cni-path", default=argparse.SUPPRESS,
                   help="plugin dirs, ':'-separated (default: $CNI_PATH, else pynet's, then /opt/cni/bin)")
    g.add_argument("--netns-dir", default=argparse.SUPPRESS, help="where namespaces are pinned (default /run/netns)")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def locations(args) -> dict:
    from .runner import locations as locs

    return locs.resolve(**{k: getattr(args, k, None) for k in ("config_dir", "cache_dir", "cni_path", "netns_dir")})


def runner_of(args):
    """The Runner of a command's location options."""
    from .runner import locations as locs

    return locs.runner(locations(args))


def attachments_of(args):
    """The Attachments of a command's location options."""
    from .runner import locations as locs

    return locs.attachments(locations(args))


def print_json(obj) -> None:
    import json

    print(json.dumps(obj, indent=2))


def table(headers: list[str], rows: list[list]) -> None:
    cells = [headers] + [["-" if v in (None, "", []) else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def warn(msg) -> None:
    """One line on stderr that does not fail the command."""
    print(f"pynet: {msg}", file=sys.stderr)


def render_format(template: str, row: dict) -> str:
    """Docker's ``--format`` in its common form: ``{{.Field}}`` replaced by the row's field (lists joined
    with ','), ``\\t``/``\\n`` as tab/newline; CommandError naming a field the row does not have."""
    import re

    def field(match) -> str:
        key = match.group(1)
        if key not in row:
            raise CommandError(f"invalid --format {template!r}: no field {key!r} (fields: "
                               f"{', '.join('.' + k for k in row)})")
        value = row[key]
        if isinstance(value, (list, tuple)):
            return ",".join(map(str, value))
        return "" if value is None else str(value)

    text = re.sub(r"\{\{\s*\.(\w+)\s*\}\}", field, template)
    return text.replace("\\t", "\t").replace("\\n", "\n")


def print_format(template: str, rows: list[dict]) -> None:
    """Each row through render_format, one line each."""
    for row in rows:
        print(render_format(template, row))
