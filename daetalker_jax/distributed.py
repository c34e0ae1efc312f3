"""Joining a multi-process run. Every process runs the same command; how they find each other:

- Cloud TPU VM pods, SLURM (`srun`), Open MPI, Kubernetes: JAX detects the cluster by itself.
- Anything else, e.g. N processes on one machine (launch/local.sh) or a hand-made cluster: set
  JAX_COORDINATOR_ADDRESS=host:port (process 0's host), JAX_NUM_PROCESSES=N and JAX_PROCESS_ID=0..N-1.
- Nothing of the above: a single process, nothing to join.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from daetalker_jax.errors import UserError


def initialize() -> None:
    """Connects this process to the others (blocking until all have joined) or does nothing when alone."""
    n, pid = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
    if n is not None or pid is not None:
        address = os.environ.get("JAX_COORDINATOR_ADDRESS")
        if not (n and pid and address):
            raise UserError("a multi-process run needs all of JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES "
                            f"and JAX_PROCESS_ID (got {address!r}, {n!r}, {pid!r}); unset all three for one process")
        try:
            n_processes, process_id = int(n), int(pid)
        except ValueError:
            raise UserError(f"JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers, got {n!r} and {pid!r}") from None
        if not 0 <= process_id < n_processes:
            raise UserError(f"JAX_PROCESS_ID={process_id} is outside 0..{n_processes - 1} (JAX_NUM_PROCESSES)")
        jax.distributed.initialize(address, n_processes, process_id)
        return
    try:
        jax.distributed.initialize()   # auto-detected clusters (TPU pod, SLURM, MPI, Kubernetes)
    except (ValueError, RuntimeError):
        pass                           # a single process: no cluster to join


def replicate(tree, sharding: jax.sharding.NamedSharding):
    """Values identical on every process -> arrays replicated over `sharding`, whose mesh may span several
    processes (jax.device_put only takes shardings of this process' own devices). PRNG keys keep their type."""

    def one(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))

    return jax.tree.map(one, tree)
