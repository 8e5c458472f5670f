"""`pynet run`: a small container launcher (namespaces, overlayfs + pivot_root, cgroups v1/v2/hybrid,
capabilities + seccomp, CNI networking through pynet's runner).

The way of a run:
    startup.py     the start-up path: to the daemon (remote.py -> the daemon's zygote.py) or run here
    options.py     argv -> RunOptions (the option table; OptionsError names a bad value)
    supervise.py   run(RunOptions) -> exit code: foreground (signals, wait) or detached (a monitor)
    container.py   create (image, storage, cgroups, record) -> start -> wait -> finish/cleanup
    namespaces.py, rootfs.py, security.py, cgroups.py, network.py   what create/start put together
    images.py, state.py   the image store and the container records
The commands: cli.py (run), cli_containers.py (ps, logs, stop, kill, rm, exec, stats, container ...),
cli_images.py (image ...). value_objects.py: the base of the light option/spec objects.
"""
