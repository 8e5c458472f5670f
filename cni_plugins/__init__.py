"""Shared mechanics of pynet's CNI plugins: skeleton, results, errors, netns entry, netlink and nft helpers.

Kept import-light: the skeleton answers VERSION without loading netlink libraries.
"""
