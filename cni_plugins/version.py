"""CNI spec versions pynet reads and writes."""

from .errors import CNIError, INCOMPATIBLE_VERSION

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT = "1.1.0"


def parse(version: str) -> tuple[int, int, int]:
    try:
        major, minor, patch = (int(part) for part in version.split("."))
    except (AttributeError, ValueError):
        raise CNIError(INCOMPATIBLE_VERSION, f"invalid cniVersion {version!r}: expected MAJOR.MINOR.PATCH") from None
    return major, minor, patch


def at_least(version: str, minimum: str) -> bool:
    return parse(version) >= parse(minimum)


def require_supported(version) -> str:
    if version is None:
        raise CNIError(INCOMPATIBLE_VERSION, "missing cniVersion in network configuration: "
                       f"plugin supports {list(SUPPORTED_VERSIONS)}")
    if not isinstance(version, str) or version not in SUPPORTED_VERSIONS:
        raise CNIError(
            INCOMPATIBLE_VERSION,
            f"incompatible CNI versions: config cniVersion is {version!r}, plugin supports {list(SUPPORTED_VERSIONS)}",
        )
    return version


def has_ip_version_field(version: str) -> bool:
    """0.3.x and 0.4.0 results carry ips[].version; 1.x dropped it."""
    return not at_least(version, "1.0.0")
