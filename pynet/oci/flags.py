"""runc's command line as urfave/cli reads it: ``--flag value``, ``--flag=value``, ``-flag`` (one dash works
too), booleans without a value, short aliases; global flags before the command, the command's own flags
and positional arguments after it. Parsed here rather than by argparse, which costs about a third of a
container start (its import, and gettext and shutil at parser construction); errors in runc's words."""

from __future__ import annotations

from .errors import OCIError


class Flag:
    """One flag: its names (without dashes), the attribute it sets, and how its value is read."""

    def __init__(self, *names: str, dest: str | None = None, kind=str, default=None, choices=None,
                 append: bool = False):
        self.names, self.kind, self.choices, self.append = names, kind, choices, append
        self.dest = dest or names[0].replace("-", "_")
        self.default = [] if append else (False if kind is bool else default)


class Namespace:
    def __init__(self, **values):
        self.__dict__.update(values)


class Command:
    """A command's flags and positional arguments; ``rest`` names the attribute taking everything after
    the last positional (exec's command, ps's options), where flags are no longer read."""

    def __init__(self, flags=(), positional=(), optional=(), rest: str | None = None):
        self.flags = list(flags)
        self.positional, self.optional, self.rest = list(positional), dict(optional), rest
        self.by_name = {n: f for f in self.flags for n in f.names}

    def parse(self, name: str, argv: list[str], into: Namespace | None = None,
              stop_at_positional: bool = False) -> Namespace:
        ns = into or Namespace()
        for f in self.flags:
            setattr(ns, f.dest, list(f.default) if f.append else f.default)
        args: list[str] = []
        n = 0
        while n < len(argv):
            arg = argv[n]
            n += 1
            if self.rest and args and len(args) >= len(self.positional) + len(self.optional):
                args.append(arg)   # the command after the id: taken as it is
                continue
            if arg == "--":
                args.extend(argv[n:])
                break
            if not arg.startswith("-") or arg == "-":
                args.append(arg)
                if stop_at_positional:
                    args.extend(argv[n:])
                    break
                continue
            key, eq, value = arg.lstrip("-").partition("=")
            flag = self.by_name.get(key)
            if flag is None:
                raise OCIError(f"flag provided but not defined: -{key}")
            if flag.kind is bool:
                if eq and value not in ("true", "false"):
                    raise OCIError(f'invalid boolean value "{value}" for -{key}')
                setattr(ns, flag.dest, value != "false")
                continue
            if not eq:
                if n >= len(argv):
                    raise OCIError(f"flag needs an argument: -{key}")
                value = argv[n]
                n += 1
            setattr(ns, flag.dest, self._value(flag, key, value, getattr(ns, flag.dest)))
        self._positional(name, ns, args)
        return ns

    @staticmethod
    def _value(flag: Flag, key: str, text: str, current):
        if flag.kind is int:
            try:
                value = int(text, 10)
            except ValueError:
                raise OCIError(f'invalid value "{text}" for flag -{key}: parse error') from None
        else:
            value = text
        if flag.choices is not None and value not in flag.choices:
            choices = flag.choices
            expected = f"{choices.start}..{choices.stop - 1}" if isinstance(choices, range) \
                else f"one of {', '.join(map(str, choices))}"   # (a range: not its 65536 numbers)
            raise OCIError(f'invalid value "{text}" for flag -{key}: expected {expected}')
        return current + [value] if flag.append else value

    def _positional(self, name: str, ns: Namespace, args: list[str]) -> None:
        need, extra = len(self.positional), len(self.optional)
        if len(args) < need or (len(args) > need + extra and not self.rest):
            if not need and not extra:
                raise OCIError(f'"{name}" requires exactly 0 argument(s)')
            amount = "exactly" if not extra else "a minimum of" if len(args) < need else "a maximum of"
            count = need if len(args) < need or not extra else need + extra
            raise OCIError(f'"{name}" requires {amount} {count} argument(s)')
        for key, value in zip(self.positional + list(self.optional), args):
            setattr(ns, key, value)
        for key, default in list(self.optional.items())[max(len(args) - need, 0):]:
            setattr(ns, key, default)
        if self.rest:
            rest = args[need + extra:]
            setattr(ns, self.rest, rest[1:] if rest[:1] == ["--"] else rest)
