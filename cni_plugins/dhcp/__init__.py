"""The dhcp IPAM plugin (the plugin side, cni_plugins/dhcp/plugin.py) and its lease daemon (`dhcp daemon`)."""
