"""The resident pynet daemon: imported libraries and plugins stay loaded; requests from the plugin front
doors (the native shim, cni_plugins/main.py) are served with the handles of the caller's namespaces
(passed as fds) by the same plugin code the standalone path runs."""
