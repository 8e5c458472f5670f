"""The base class of the launcher's plain value objects (RunOptions, NetOptions, Limits, the process and
rootfs specs, ...): what ``@dataclass`` gave them (positional or keyword construction with defaults,
repr, ==) without importing dataclasses, which with inspect costs ~8 ms of every `pynet run` start."""

REQUIRED = object()


class Fields:
    """Subclasses list ``FIELDS = {name: default}`` in order; a default that is a type (list, dict, another
    Fields class) is a factory called for each new object, REQUIRED means no default."""

    FIELDS: dict = {}

    def __init__(self, *args, **kwargs):
        names = list(self.FIELDS)
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional arguments")
        values = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in self.FIELDS or key in values:
                raise TypeError(f"{type(self).__name__}: unexpected or repeated argument {key!r}")
            values[key] = value
        for name, default in self.FIELDS.items():
            if name in values:
                setattr(self, name, values[name])
            elif default is REQUIRED:
                raise TypeError(f"{type(self).__name__}: missing argument {name!r}")
            else:
                setattr(self, name, default() if isinstance(default, type) else default)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in self.FIELDS)})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    __hash__ = None
