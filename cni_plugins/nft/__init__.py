"""pynet's nftables: the one place that owns pynet's tables.

- ``handle``: ``Nft(netns_fd=None)``, libnftables contexts bound to one network namespace, ``apply``.
- ``tags``: owner tags, the comment on every element that says which attachment owns it.
- ``layout``: a plugin's table as data (``Table``, ``Set``, ``Chain``, ``Part``).
- ``ownership``: the operations: write the skeleton, own elements, remove by owner, GC a network, list.

Every plugin keeps its own table (as cri-o's hostport code and kube-proxy do); rules are written once per
table, and per-container state is owner-tagged set/map elements.
"""

import sys

# Names load on first use: the skeleton imports ``tags`` for every invocation, VERSION included, and must not
# pay for the rest.
_HOME = {
    "handle": ("Nft", "NftError", "element", "owner_of", "value_of"),
    "layout": ("Chain", "Part", "Set", "Table"),
    "ownership": ("Listing", "add_tagged_rules", "base_chain_policies", "canon", "collect_garbage", "concat",
                  "delete_exactly", "ensure_part", "own", "owned", "prefix", "remove_owned", "remove_tagged_rules",
                  "remove_where", "rules_in_place", "tagged_rules", "write_skeleton"),
    "tags": ("network_owner_tag", "network_suffix", "owner_tag"),
}
_WHERE = {name: module for module, names in _HOME.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # __import__, not importlib.import_module: the importlib package is not loaded in a plugin process
    __import__(f"{__name__}.{module}")
    value = getattr(sys.modules[f"{__name__}.{module}"], name)
    globals()[name] = value
    return value
