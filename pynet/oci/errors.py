"""The runtime's one error type, apart from config.py: `start`, `state`, `kill` and `delete` raise it
without loading the config reader (its `re` and the ctypes of cni_plugins/syscalls.py cost ~9 ms)."""


class OCIError(Exception):
    """A runtime error: the message is printed as runc prints its errors, exit status 1."""
