"""`pynet run`: a small container launcher (namespaces, overlayfs + pivot_root, cgroups v1/v2/hybrid,
capabilities + seccomp, CNI networking through pynet's runner). See cli.py for the commands,
supervise.run for the API of a run (RunOptions in, exit code out)."""
