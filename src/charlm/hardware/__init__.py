"""The hardware layer: what this machine can do, and the choices made from it (the device, threads,
native builds, processes)."""
