"""pynet-oci: a runc-compatible OCI runtime (create/start/state/kill/delete and friends) built on the
launcher's namespace, rootfs, cgroup and security modules. See cli.py for the commands, config.py for the
part of config.json honoured, init.py for the container's init process."""
