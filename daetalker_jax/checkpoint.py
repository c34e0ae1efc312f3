"""Orbax checkpoints of a training run: model/optimizer state, EMA parameters, step, and the Grain
data iterator, saved asynchronously beside each other; keep-last-N; automatic resume.

A small wrapper, so that orbax's v1 API can replace the v0 CheckpointManager in one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from daetalker_jax.errors import UserError


class Checkpoints:
    def __init__(self, directory: str | Path, keep: int = 3):
        self.mngr = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True),
            item_names=("train", "data"))

    @property
    def latest_step(self) -> int | None:
        return self.mngr.latest_step()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A failed write (disk full, file too large, permissions; orbax reports them as OSError or as
        ValueError from its storage layer) becomes one clear message. The half-written step stays a tmp
        folder that orbax ignores and clears, so the last complete checkpoint is what a rerun resumes from."""
        try:
            yield
        except (OSError, ValueError) as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:400]
            last = self.latest_step
            kept = "no checkpoint was complete yet" if last is None else \
                f"the last complete checkpoint (step {last}) is kept and a rerun resumes from it"
            raise UserError(f"could not write a checkpoint in {self.mngr.directory} ({reason}); free disk space "
                            f"or choose another --workdir; {kept}") from e

    def save(self, step: int, train: Any, data_iter=None) -> None:
        """`train` is a pytree of arrays (state, EMA, ...); saving is asynchronous (its errors surface
        at the next save or at close)."""
        items = {"train": ocp.args.StandardSave(train)}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        with self._writing():
            self.mngr.save(step, args=ocp.args.Composite(**items))

    def restore(self, abstract_train: Any, data_iter=None, step: int | None = None) -> Any:
        """Restores into the shapes/shardings of `abstract_train` (jax.ShapeDtypeStruct leaves, so the
        device count may differ from the saving run) and, if given, the data iterator in place. Each
        process saved its own iterator; when the run now has a different number of processes, those states
        no longer describe its shards, so the iterator is left to start a new epoch (said in a log line)."""
        step = self.latest_step if step is None else step
        items = {"train": ocp.args.StandardRestore(abstract_train)}
        if data_iter is not None:
            saved = self.saved_process_count(step)
            if saved == jax.process_count():
                items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
            elif saved is not None and jax.process_index() == 0:
                print(f"data iterator: the checkpoint at step {step} was written by {saved} processes and this run "
                      f"has {jax.process_count()}; model, optimizer and EMA are restored, the data order restarts "
                      "at the beginning of an epoch", flush=True)
        return self.mngr.restore(step, args=ocp.args.Composite(**items))["train"]

    def saved_process_count(self, step: int) -> int | None:
        """How many processes wrote the data iterator states of `step` (None: none saved)."""
        names = [p.name for p in (Path(self.mngr.directory) / str(step) / "data").glob("process_*-of-*.json")]
        return int(names[0].removesuffix(".json").split("-of-")[1]) if names else None

    def wait(self) -> None:
        with self._writing():
            self.mngr.wait_until_finished()

    def close(self) -> None:
        with self._writing():
            self.mngr.wait_until_finished()
            self.mngr.close()


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
