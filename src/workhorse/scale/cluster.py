"""Starting or joining Ray, the one way `run --ray` and `serve --ray` both do it."""

from __future__ import annotations

LOCAL = "local"  # the address that starts a Ray on this machine


def join_ray(address: str, cpus: float, *, quiet_workers: bool = False) -> bool:
    """Join the cluster at `address`, or with `local` start one on this machine with the work's
    `cpus` and one more logical CPU: Ray Data's reading tasks need one of their own beside actors
    holding all the others (without it a batch job waits forever). False when Ray was already
    running in this process (the caller then leaves it running)."""
    import ray

    if ray.is_initialized():
        return False
    local = address == LOCAL
    ray.init(address=None if local else address, num_cpus=cpus + 1 if local else None, include_dashboard=False,
             log_to_driver=not quiet_workers, configure_logging=False)
    return True
