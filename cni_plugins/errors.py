"""The one exception type plugins raise; the skeleton renders it as CNI error JSON."""

# Codes from the CNI spec (SPEC.md, "Error"). Kept as names so call sites say what went wrong.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
# 100+ is plugin-specific; the reference plugins use 999 for "internal".
INTERNAL = 999


class CNIError(Exception):
    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str) -> dict:
        return {"cniVersion": cni_version, "code": self.code, "msg": self.msg, "details": self.details}

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg


def invalid_config(key: str, value, why: str) -> CNIError:
    """An error naming the offending config key and value, the form every validator uses."""
    return CNIError(INVALID_CONFIG, f"invalid {key} {value!r}: {why}")
