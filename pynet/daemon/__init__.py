"""The resident pynet daemon: imported libraries and plugin modules stay loaded, requests from the thin
plugin clients (cni_plugins.client) are served in the caller's network namespace by the same plugin code
the standalone path runs."""
