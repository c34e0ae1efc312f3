"""The trainer every stage uses (DiffAE now, speech2latent next): mesh, jitted step, loop, orbax
checkpoints with automatic resume, TensorBoard/JSON logging, progress bar, NaN guard.

Data parallel: one 'data' mesh axis over all devices of all processes; parameters, optimizer state and
EMA replicated; batches sharded. The model is split once into (graphdef, rng state, train state); the
jitted step merges it back, reseeds dropout from fold_in(seed, step) and donates the train state.
A task supplies the model, the per-process data iterator, the loss and (optionally) sample images.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from tqdm import tqdm

from daetalker_jax.checkpoint import Checkpoints, abstract_like
from daetalker_jax.data.pipeline import Shard, to_global
from daetalker_jax.distributed import replicate
from daetalker_jax.errors import UserError, atomic_path, ensure_writable_dir
from daetalker_jax.flops import count_flops
from daetalker_jax.trainers.packing import packings

# measured bf16 matmul ceilings per device, for MFU: H100 from the anchors; H200 the device notes (788 on random data)
PEAK_TFLOPS = {"H100": 801.0, "H200": 788.0}


def peak_tflops() -> float | None:
    """The bf16 matmul ceiling MFU is quoted against (the anchors), for the first device's kind; None if unknown."""
    kind = jax.devices()[0].device_kind
    return next((v for k, v in PEAK_TFLOPS.items() if k in kind), None)


class Task(Protocol):
    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        """The architecture alone (also used to load a trained model without its data)."""

    def initialize(self, model: nnx.Module) -> None:
        """Data-dependent set-up of a fresh model (e.g. statistics); skipped when resuming."""

    def dataset(self, shard: Shard): ...

    def loss(self, model: nnx.Module, batch: dict[str, jax.Array], key: jax.Array,
             sharding: jax.sharding.Sharding) -> tuple[jax.Array, dict]: ...

    def samples(self, ema_model: nnx.Module, batch: dict[str, jax.Array], key: jax.Array
                ) -> tuple[np.ndarray | None, dict[str, float]]:
        """An image for TensorBoard and workdir/samples, and evaluation scalars."""


def make_mesh() -> jax.sharding.Mesh:
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


class MetricWriter:
    """TensorBoard scalars/images and a metrics.jsonl on process 0; nothing on the others."""

    def __init__(self, workdir: Path, step: int = 0):
        """`step`: where the run (re)starts. Rows logged after it by a run that died before its next
        checkpoint are dropped (and TensorBoard purges them), so the history holds each step once."""
        self.active = jax.process_index() == 0
        if self.active:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=step + 1 if step else None)
            path = workdir / "metrics.jsonl"
            if path.exists():
                kept = [line for line in path.read_text().splitlines(keepends=True) if _logged_at_most(line, step)]
                with atomic_path(path) as tmp:
                    tmp.write_text("".join(kept))
            self.jsonl = open(path, "a")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.active:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
            self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
            self.jsonl.flush()

    def image(self, step: int, name: str, grid: np.ndarray) -> None:
        if self.active:
            self.tb.add_image(name, grid, step, dataformats="HWC")

    def close(self) -> None:
        if self.active:
            self.tb.close()
            self.jsonl.close()


def _logged_at_most(line: str, step: int) -> bool:
    """A complete metrics row (a kill can cut the last one) of a step <= `step`."""
    try:
        return line.endswith("\n") and json.loads(line)["step"] <= step
    except (ValueError, KeyError, TypeError):
        return False


def ema_decay_at(config: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    """The EMA decay for update `step` (0-based): `ema_decay`, or with `ema_warmup` min(ema_decay, (1 + t) /
    (10 + t)) (TF's ExponentialMovingAverage with num_updates). A constant 0.999 over a 2,000-step run leaves
    0.999^2000 = 13.5% of the random initial weights in the EMA; the warm-up forgets them within tens of
    steps and equals the constant decay from step 9 / (1 - ema_decay) - 10 on."""
    decay = jnp.float32(config.ema_decay)
    if not config.get("ema_warmup", False):
        return decay
    t = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def _step(graphdef, ema_decay: jax.Array, seed: int, task: Task, sharding, state, ema, rng_state, batch, step):
    model, optimizer = nnx.merge(graphdef, rng_state, state)
    key = jax.random.fold_in(jax.random.key(seed), step)
    # every stream: a Dropout built from nnx.Rngs(seed) draws from a 'default' stream, not 'dropout'
    nnx.reseed(model, default=jax.random.fold_in(key, 1), dropout=jax.random.fold_in(key, 1))
    model.train()

    def loss_fn(m):
        return task.loss(m, batch, key, sharding)

    (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema, nnx.state(model, nnx.Param))
    _, _, state = nnx.split((model, optimizer), nnx.RngState, ...)
    return state, ema, {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}


def train_step(graphdef, trees: tuple, config: ml_collections.ConfigDict, task: Task, mesh: jax.sharding.Mesh):
    """The jitted `_step` on plain arrays: (state buffers, EMA buffers, RNG leaves, batch, step) -> (state
    buffers, EMA buffers, metrics); the first two are donated. `trees` = (state, ema, rng_state), for their
    structure; the buffers are `packings(config, state, ema)`'s (trainers/packing.py: flat buffers on
    accelerators, else leaf lists). Never NNX State: its leaves are Variables whose flattening runs Python per
    leaf, which on an H200 alone took 58 ms a step for the reference DiffAE (its GPU work is less)."""
    state_packing, ema_packing = packings(config, *trees[:2])
    rng_def = jax.tree.structure(trees[2])

    def flat(state, ema, rng_state, batch, step):
        state, ema, metrics = _step(graphdef, ema_decay_at(config, step), config.seed, task,
                                    NamedSharding(mesh, PartitionSpec("data")), state_packing.unpack(state),
                                    ema_packing.unpack(ema), jax.tree.unflatten(rng_def, rng_state), batch, step)
        return state_packing.pack(state), ema_packing.pack(ema), metrics

    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(flat, donate_argnums=(0, 1), out_shardings=(replicated, replicated, replicated))


def compile_step(task: Task, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> jax.stages.Compiled:
    """The Trainer's train step compiled from shapes alone (no data, no checkpoint, no initialisation), for a task
    whose batch shapes follow from the config (`task.batch_spec()`). Why: it checks that a config compiles and fits
    the devices' memory before a long run, and with a persistent compilation cache ($JAX_COMPILATION_CACHE_DIR)
    the training run that follows loads the program instead of compiling it (the reference run compiles while
    `prepare` runs). The arguments mirror `Trainer.run`'s exactly, or the cache would miss."""
    model, optimizer = build(task, config, abstract=True)
    graphdef, rng_state, state = nnx.split((model, optimizer), nnx.RngState, ...)
    ema = nnx.state(model, nnx.Param)
    replicated, sharded = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
    step = train_step(graphdef, (state, ema, rng_state), config, task, mesh)
    args = [*(p.specs(replicated) for p in packings(config, state, ema)),
            [jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated) for x in jax.tree.leaves(rng_state)]]
    batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharded) for k, (shape, dtype) in task.batch_spec().items()}
    return step.lower(*args, batch, jax.ShapeDtypeStruct((), jnp.int32)).compile()


def _load_params(model: nnx.Module, path: str) -> None:
    """Starts from converted weights (e.g. `convert_diffae`): an orbax checkpoint of the Param tree."""
    import orbax.checkpoint as ocp

    params = nnx.state(model, nnx.Param)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(params))
    try:
        with ocp.StandardCheckpointer() as ckptr:
            restored = ckptr.restore(Path(path).absolute(), abstract)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise UserError(f"cannot start from {path}: {e}; convert official weights with "
                        "`python -m daetalker_jax.convert_diffae` for this config's image size") from e
    nnx.replace_by_pure_dict(params, restored)
    nnx.update(model, params)


def learning_rate(config: ml_collections.ConfigDict) -> float | optax.Schedule:
    """Constant `learning_rate` (the papers'), after a linear warm-up over `warmup_steps` if any; or with
    `lr_schedule="cosine"` warm-up then cosine decay to 0 at `num_steps`, which ends short runs (the reference
    run) at a lower loss than a constant rate."""
    lr, warmup = float(config.learning_rate), int(config.get("warmup_steps", 0))
    kind = config.get("lr_schedule", "constant")
    if kind not in ("constant", "cosine"):
        raise UserError(f"--config.lr_schedule must be constant or cosine, got {kind!r}")
    if warmup < 0 or (kind == "cosine" and warmup >= config.num_steps):
        raise UserError(f"--config.warmup_steps={warmup} must be at least 0 and, with a cosine schedule, below "
                        f"num_steps={config.num_steps}")
    if kind == "cosine":
        if warmup == 0:
            return optax.cosine_decay_schedule(lr, config.num_steps)
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, config.num_steps, end_value=0.0)
    if warmup == 0:
        return lr
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])


def _optimizer(model: nnx.Module, config: ml_collections.ConfigDict) -> nnx.Optimizer:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(learning_rate(config)))
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


def build(task: Task, config: ml_collections.ConfigDict, *, abstract: bool = False
          ) -> tuple[nnx.Module, nnx.Optimizer]:
    """A model and its optimizer: initialised (eagerly: on an H200 that took 16 s for the DiffAE, a jitted
    initialisation 51 s of compiling), or with abstract=True shapes only, for a model whose values all come
    from a checkpoint (1.8 s); its RNG state, which is not checkpointed, then gets fixed keys (the train
    step reseeds dropout every step anyway)."""
    def create(key):
        model = task.build_model(nnx.Rngs(key))
        return model, _optimizer(model, config)

    key = jax.random.key(config.seed)
    if not abstract:
        return create(key)
    pair = nnx.eval_shape(create, key)
    rng = nnx.state(pair, nnx.RngState)
    nnx.update(pair, jax.tree.map(
        lambda s: jax.random.split(key, s.shape) if jax.dtypes.issubdtype(s.dtype, jax.dtypes.prng_key)
        else jnp.zeros(s.shape, s.dtype), rng))
    return pair


def _train_tree(state, ema, step: jax.Array) -> dict:
    return {"state": nnx.to_pure_dict(state), "ema": nnx.to_pure_dict(ema), "step": step}


def load_trained(workdir: str | Path, step: int | None = None) -> tuple[ml_collections.ConfigDict, nnx.Module]:
    """(config, EMA model in eval mode) of a training run folder, for extraction and generation.

    Rebuilds the architecture from workdir/config.json, restores the checkpoint (latest, or `step`)
    onto this process' first device, and keeps only what inference needs: the EMA parameters and the
    model's other variables (e.g. data statistics)."""
    from daetalker_jax.trainers import make_task

    workdir = Path(workdir)
    ckpt_dir = workdir / "checkpoints"
    if not (workdir / "config.json").exists() or not ckpt_dir.exists():
        raise UserError(f"{workdir} is not a training run folder (no config.json and checkpoints/); pass the "
                        "--workdir of `python -m daetalker_jax.train`")
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    task = make_task(config)
    model, optimizer = build(task, config, abstract=True)
    state = nnx.state((model, optimizer), nnx.Not(nnx.RngState))
    ema = nnx.state(model, nnx.Param)
    ckpt = Checkpoints(ckpt_dir)
    try:
        if ckpt.latest_step is None:
            raise UserError(f"{ckpt_dir} holds no finished checkpoint yet; train longer or wait for the first save")
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        restored = ckpt.restore(abstract_like(_train_tree(state, ema, jnp.int32(0)), device), step=step)
    finally:
        ckpt.close()
    nnx.replace_by_pure_dict(state, restored["state"])
    nnx.replace_by_pure_dict(ema, restored["ema"])
    nnx.update(model, state[0])
    nnx.update(model, ema)
    model.eval()
    return config, model


class Trainer:
    """Builds model, optimizer and EMA, restores the latest checkpoint, and runs the loop."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path, task: Task,
                 mesh: jax.sharding.Mesh | None = None):
        start = time.perf_counter()
        self.config, self.task = config, task
        self.workdir = ensure_writable_dir(workdir)
        self.mesh = mesh or make_mesh()
        if config.batch_size % self.mesh.size:
            raise UserError(f"batch_size {config.batch_size} is not divisible by the {self.mesh.size} devices; set "
                            f"--config.batch_size to a multiple of {self.mesh.size}")
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.data = iter(task.dataset(Shard.of_this_process()))   # before the checkpoint folder: bad data fails first
        self._startup = {"data": time.perf_counter() - start}
        self.ckpt = Checkpoints(self.workdir / "checkpoints", keep=config.keep_checkpoints)
        resuming = self.ckpt.latest_step is not None
        model, optimizer = build(task, config, abstract=resuming)   # resuming: every value comes from the checkpoint
        if not resuming:
            if config.get("init_from"):
                _load_params(model, config.init_from)
            task.initialize(model)
        self.graphdef, rng_state, state = nnx.split((model, optimizer), nnx.RngState, ...)
        ema = nnx.state(model, nnx.Param)
        self.rng_state = replicate(rng_state, self.replicated)
        # Between steps the train state and the EMA live as the step's arguments (trainers/packing.py).
        pair = packings(config, state, ema)
        self._pack = jax.jit(lambda s, e: tuple(p.pack(t) for p, t in zip(pair, (s, e))),
                             out_shardings=self.replicated)
        self._unpack = jax.jit(lambda s, e: tuple(p.unpack(t) for p, t in zip(pair, (s, e))),
                               out_shardings=self.replicated)
        self.step = 0
        if resuming:
            state, ema = self._restore(state, ema)
        else:
            state, ema = replicate((state, ema), self.replicated)
        self._state, self._ema = self._pack(state, ema)   # the EMA starts as a copy of the parameters
        self.step_fn = train_step(self.graphdef, (state, ema, rng_state), config, task, self.mesh)
        self._startup["model"] = time.perf_counter() - start - self._startup["data"]
        if jax.process_index() == 0:   # what `load_trained` rebuilds the model from (after a refused resume:
            with atomic_path(self.workdir / "config.json") as tmp:   # the run's own config stays)
                tmp.write_text(config.to_json_best_effort(indent=1))

    @property
    def state(self) -> nnx.State:
        return self._unpack(self._state, self._ema)[0]

    @property
    def ema(self) -> nnx.State:
        return self._unpack(self._state, self._ema)[1]

    def _tree(self) -> dict:
        # the step as a global array too: a multi-process checkpoint cannot hold one process' local array
        state, ema = self._unpack(self._state, self._ema)
        return _train_tree(state, ema, replicate(np.int32(self.step), self.replicated))

    def _restore(self, state: nnx.State, ema: nnx.State) -> tuple[nnx.State, nnx.State]:
        """The checkpoint's values in the (abstract) trees' structure; sets the step."""
        try:
            restored = self.ckpt.restore(abstract_like(_train_tree(state, ema, np.int32(0)), self.replicated),
                                         self.data)
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"the checkpoint in {self.ckpt.mngr.directory} does not fit this config ({e}); "
                            "use a new --workdir or the config it was trained with") from e
        nnx.replace_by_pure_dict(state, restored["state"])
        nnx.replace_by_pure_dict(ema, restored["ema"])
        self.step = int(restored["step"])
        if jax.process_index() == 0:
            print(f"resumed from {self.ckpt.mngr.directory} at step {self.step}", flush=True)
        return state, ema

    def ema_model(self) -> nnx.Module:
        """The model with EMA weights, in eval mode (for samples, extraction and generation)."""
        state, ema = self._unpack(self._state, self._ema)
        # copy=True: new Variables, so writing the EMA into them leaves the trainer's state and RNG untouched
        model, _ = nnx.merge(self.graphdef, self.rng_state, state, copy=True)
        nnx.update(model, ema)
        model.eval()
        return model

    def _check_finite(self, metrics: dict[str, float]) -> None:
        bad = [k for k, v in metrics.items() if not np.isfinite(v)]
        if bad:
            last = self.ckpt.latest_step
            raise UserError(f"{', '.join(bad)} became NaN/Inf at step {self.step}; the last good checkpoint is "
                            f"step {last}. Lower the learning rate or check the data, then rerun to resume.")

    def _mfu(self, batch: dict, seconds_per_step: float) -> float | None:
        peak = peak_tflops()
        if peak is None:
            return None
        if not hasattr(self, "_flops"):
            self._flops = count_flops(self.step_fn, self._state, self._ema, jax.tree.leaves(self.rng_state), batch,
                                      jnp.int32(0))
        return self._flops / seconds_per_step / (peak * 1e12 * jax.device_count())

    def run(self) -> dict[str, float]:
        cfg = self.config
        writer = MetricWriter(self.workdir, self.step)
        bar = tqdm(total=cfg.num_steps, initial=self.step, desc="train", unit="step",
                   disable=jax.process_index() != 0)
        last: dict[str, float] = {}
        t0, n0 = time.perf_counter(), self.step
        first = self.step
        rng = jax.tree.leaves(self.rng_state)
        try:
            while self.step < cfg.num_steps:
                batch = to_global(next(self.data), self.mesh)
                if self.step == first:
                    self._startup["first batch"] = time.perf_counter() - t0
                self._state, self._ema, metrics = self.step_fn(self._state, self._ema, rng, batch,
                                                               jnp.int32(self.step))
                self.step += 1
                if self.step == first + 1:   # where a long start goes: data, model (+ restore), compilation
                    jax.block_until_ready(metrics)
                    self._startup["first step"] = time.perf_counter() - t0 - self._startup["first batch"]
                    if jax.process_index() == 0:
                        bar.write("start-up: " + ", ".join(f"{k} {v:.1f} s" for k, v in self._startup.items()))
                bar.update()
                done = self.step == cfg.num_steps
                if self.step % cfg.log_every == 0 or done or self.step % cfg.checkpoint_every == 0:
                    last = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    self._check_finite(last)
                    dt = (time.perf_counter() - t0) / max(1, self.step - n0)
                    last["examples_per_s"] = cfg.batch_size / dt
                    mfu = self._mfu(batch, dt)
                    if mfu is not None:
                        last["mfu"] = mfu
                    writer.scalars(self.step, last)
                    bar.set_postfix(loss=f"{last['loss']:.4f}")
                    t0, n0 = time.perf_counter(), self.step
                if self.step % cfg.checkpoint_every == 0 or done:
                    self.ckpt.save(self.step, self._tree(), self.data)
                if cfg.sample_every and (self.step % cfg.sample_every == 0 or done):
                    self._samples(batch, writer)
        finally:
            bar.close()
            self.ckpt.close()
            writer.close()
        return last

    def _samples(self, batch: dict, writer: MetricWriter) -> None:
        grid, scalars = self.task.samples(self.ema_model(), batch, jax.random.key(self.config.seed))
        if scalars:
            writer.scalars(self.step, scalars)
        if grid is None or jax.process_index() != 0:
            return
        from PIL import Image

        out = self.workdir / "samples"
        out.mkdir(exist_ok=True)
        Image.fromarray(grid).save(out / f"step_{self.step:07d}.png")
        writer.image(self.step, "samples", grid)
