"""Scores a trained DiffAE + speech2latent on the held-out clips of a prepared dataset.

Per clip: the video generated from the clip's speech (ground-truth pose given, or predicted) with one shared
x_T; the DiffAE alone on up to `recon_frames` evenly spaced real crops (decoded from inverted and from the
shared x_T); then frame
fidelity, lip sync against the synthetic corpus' analytic mouth track (when its sidecars are there), pose
error and head-motion statistics, temporal stability, LSE-D / LSE-C of a trained sync expert (optional),
and FVD over all clips. Mouth opening and pose are read from pixels by `synth.measure` at 128 px and up;
smaller frames get the mouth-opening probe (fit on the training crops; no pose), and the reader's own
accuracy on the real crops is reported next to it.

Speed: all clips' frames are decoded together in full batches (a clip is shorter than a batch), and the CPU
work on pixels (the reader, ~10 ms a frame on one core; PSNR/SSIM and stability) runs in worker processes
(`evaluation/pixels.py`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from daetalker_jax.data.pipeline import clip_audio, clip_name, data_source
from daetalker_jax.errors import UserError
from daetalker_jax.evaluation.pixels import map_in, pixel_scores
from daetalker_jax.metrics.lipsync import amplitude, pearson, sync_scores
from daetalker_jax.metrics.pose import compare_motion, pose_error
from daetalker_jax.synth.corpus import GROUPS, clip_group
from daetalker_jax.synth.measure import measure_frames
from daetalker_jax.synth.probe import MouthProbe, clip_frames, opening_track
from daetalker_jax.talker import Talker

MEASURE_MIN_SIZE = 128   # `measure` needs the eye whites and nostrils (see its docstring)


class Reader:
    """Mouth opening (and pose, from 128 px) per frame, from pixels."""

    def __init__(self, size: int, data_dir: Path, corpus_clips: Path | None):
        self.uses_measure = size >= MEASURE_MIN_SIZE
        self.probe = None
        if not self.uses_measure and corpus_clips is not None:
            self.probe = MouthProbe.from_clips(clip_frames(data_dir, "train"), corpus_clips)

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n,) opening and (n, 3) yaw/pitch/roll in degrees, NaN where unreadable."""
        if self.uses_measure:
            return measure_frames(frames)
        opening = self.probe(frames) if self.probe is not None else np.full(len(frames), np.nan)
        return opening, np.full((len(frames), 3), np.nan)

    def many(self, videos: list[np.ndarray], pool: Executor | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """`self` on each video; `measure` in the `pool`'s processes when there is one (see `worker_pool`)."""
        if not self.uses_measure:
            return [self(v) for v in videos]
        return map_in(pool, measure_frames, videos)


@dataclass
class ClipResult:
    clip_id: str
    scores: dict[str, float]
    generated: np.ndarray                       # uint8 frames
    real: np.ndarray
    tracks: dict[str, np.ndarray] = field(default_factory=dict)   # for the plots
    group: str | None = None                    # whose speech (synth.corpus.GROUPS), where the corpus says


def speech_groups(corpus_clips: Path | None) -> Callable[[str], str | None]:
    """clip id -> its speech group from the corpus' sidecar (None without one)."""
    manifest = None if corpus_clips is None else corpus_clips.parent / "manifest.json"
    held_out = json.loads(manifest.read_text()).get("held_out_voices", []) if manifest and manifest.is_file() else []

    def group(clip_id: str) -> str | None:
        sidecar = None if corpus_clips is None else corpus_clips / f"{clip_id}.json"
        return clip_group(json.loads(sidecar.read_text()), held_out) if sidecar and sidecar.is_file() else None
    return group


def held_out_split(data_dir: Path) -> str:
    counts = json.loads((Path(data_dir) / "summary.json").read_text())["splits"]
    return next((s for s in ("test", "val") if counts.get(s)), "train")


class SyncExpert:
    """A trained sync expert run (trainers/sync.py): LSE-D / LSE-C / offset of a clip's mouth vs its speech."""

    def __init__(self, workdir: Path):
        from daetalker_jax.trainers.base import load_trained

        self.config, self.model = load_trained(workdir)
        if self.config.task != "sync":
            raise UserError(f"--sync {workdir} is a {self.config.task!r} run, not a sync expert (configs/sync.py)")

    def __call__(self, frames: np.ndarray, mel: np.ndarray) -> dict[str, float]:
        from daetalker_jax.metrics.syncnet import lse, mouth_crops

        out = lse(self.model, mouth_crops(frames, tuple(self.config.mouth_size)), mel)
        return {"lse_d": float(out["lse_d"]), "lse_c": float(out["lse_c"]), "offset": float(out["offset"])}


@dataclass
class _Clip:
    clip_id: str
    example: dict
    real: np.ndarray
    true_pose: np.ndarray
    used_pose: np.ndarray


def _split(frames: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
    return np.split(frames, np.cumsum(lengths)[:-1])


def _decoded(talker: Talker, latents: np.ndarray, x_T, lengths: list[int], bar: tqdm | None = None
             ) -> list[np.ndarray]:
    """The frames of `latents` from the shared x_T (the generation's decoding program), cut into `lengths`."""
    return _split(np.stack(list(talker.frames(latents, x_T, bar))), lengths)


def evaluate_clips(talker: Talker, data_dir: Path, corpus_clips: Path | None, *, split: str, pose_given: bool,
                   seed: int = 0, max_clips: int | None = None, sync: SyncExpert | None = None,
                   recon_frames: int = 8, invert_steps: int | None = None, reader: Reader | None = None,
                   pool: Executor | None = None, seconds: dict[str, float] | None = None) -> list[ClipResult]:
    """Scores the first `max_clips` clips of `split`. recon_frames: real crops per clip for the DiffAE-alone
    numbers (evenly spaced), inverted and decoded in `invert_steps` DDIM steps each (default: the generation's;
    DiffAE's autoencoding protocol uses 100) and decoded from the shared x_T; reader: mouth/pose from pixels
    (default: built here); pool: worker processes for the CPU work on pixels (`pixels.worker_pool`; None: this
    process); `seconds` receives each phase's wall time."""
    seconds = {} if seconds is None else seconds
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 2)
        clock = now

    source = data_source(str(data_dir), "clips", split)
    crops = clip_frames(data_dir, split)
    reader = Reader(talker.image_size, data_dir, corpus_clips) if reader is None else reader
    x_T = talker.noise(seed)
    clips, latents = [], []
    n_clips = len(source) if max_clips is None else min(max_clips, len(source))
    for i in tqdm(range(n_clips), desc="speech2latent", unit="clip"):
        ex = source[i]
        clip_id = clip_name(ex)
        real, true_pose = crops[clip_id], np.asarray(ex["pose"], np.float64)
        z, used_pose = talker.latents(clip_audio(ex), true_pose if pose_given else None)
        n = min(len(z), len(real))
        clips.append(_Clip(clip_id, ex, real[:n], true_pose[:n], used_pose[:n]))
        latents.append(z[:n])
    if not clips:
        return []
    lap("speech2latent")
    lengths = [len(c.real) for c in clips]
    with tqdm(total=sum(lengths), desc="generate", unit="frame") as bar:
        generated = _decoded(talker, np.concatenate(latents), x_T, lengths, bar)
    lap("generate")
    picks = [np.unique(np.linspace(0, n - 1, min(n, recon_frames)).round().astype(int)) for n in lengths]
    chosen = np.concatenate([c.real[p] for c, p in zip(clips, picks)])
    picked = [len(p) for p in picks]
    z, inverted = talker.reconstruct(chosen, invert_steps)
    inverted = _split(inverted, picked)
    shared = _decoded(talker, z, x_T, picked)   # the program compiled for the generation, fed the frames' latents
    lap("reconstruct")
    with_truth = [corpus_clips is not None and (corpus_clips / f"{c.clip_id}.json").is_file() for c in clips]
    known = [i for i, t in enumerate(with_truth) if t]
    readings = reader.many(generated + [clips[i].real for i in known] + [shared[i] for i in known], pool)
    gen_reads = readings[:len(clips)]
    real_reads, shared_reads = iter(readings[len(clips):][:len(known)]), iter(readings[len(clips) + len(known):])
    lap("read_pixels")
    pixels = map_in(pool, pixel_scores, generated, [c.real for c in clips], inverted, shared, picks)
    lap("pixel_scores")
    results, group_of = [], speech_groups(corpus_clips)
    for c, gen, scores, (gen_open, gen_pose), truth_known, p in zip(clips, generated, pixels, gen_reads, with_truth,
                                                                    picks):
        real = c.real
        tracks = {"generated_opening": gen_open, "generated_pose": gen_pose, "requested_pose": c.used_pose,
                  "true_pose": c.true_pose}
        if truth_known:
            truth = opening_track(corpus_clips, c.clip_id)[:len(real)]
            (real_open, real_pose), (dae_open, dae_pose) = next(real_reads), next(shared_reads)
            tracks.update(truth_opening=truth, real_opening=real_open)
            scores.update({f"lipsync/{k}": v for k, v in sync_scores(gen_open, truth).items()})
            scores["lipsync/reader_r_on_real"] = sync_scores(real_open, truth)["r"]
            # The DiffAE alone: the mouth decoded from the encoder's own latents (shared x_T) at the picked
            # frames; high here and low in `r` puts the lip-sync gap in speech2latent. The same for the pose,
            # beside the reader's own error on the real frames (the floor of every pose error).
            scores["lipsync/r_dae"] = pearson(dae_open, truth[p])
            scores["lipsync/amplitude_dae"] = amplitude(dae_open, truth[p])
            if reader.uses_measure:   # the reader's noise inflates every measured speed: its ratios on real frames
                read_real = compare_motion(real_pose, c.true_pose)
                scores.update({f"motion/{k}_reader_on_real": v for k, v in read_real.items() if k.endswith("_ratio")})
                if pose_given:
                    scores.update({f"pose/{k}_dae": v for k, v in pose_error(dae_pose, c.true_pose[p]).items()})
                    scores.update({f"pose/{k}_reader_on_real": v
                                   for k, v in pose_error(real_pose, c.true_pose).items()})
        if sync is not None:
            mel = np.asarray(c.example["mel"], np.float32)
            scores.update({f"sync/{k}": v for k, v in sync(gen, mel).items()})
            scores.update({f"sync/{k}_real": v for k, v in sync(real, mel).items()})
        if reader.uses_measure:
            if pose_given:
                scores.update({f"pose/{k}": v for k, v in pose_error(gen_pose, c.true_pose).items()})
            scores.update({f"motion/{k}": v for k, v in compare_motion(gen_pose, c.true_pose).items()})
        results.append(ClipResult(c.clip_id, scores, gen, real, tracks, group_of(c.clip_id)))
    lap("scores")
    return results


def video_fvd(results: list[ClipResult]) -> float:
    """FVD between the real and the generated clips (every 16-frame clip of every video is one sample; NaN when
    there are fewer than 2 such clips)."""
    from daetalker_jax.metrics.fvd import CLIP_LEN, fvd

    long = [r for r in results if len(r.generated) >= CLIP_LEN]
    if sum(len(r.generated) // CLIP_LEN for r in long) < 2:
        return float("nan")
    return fvd([r.real for r in long], [r.generated for r in long])


def _average(results: list[ClipResult], keys: list[str], prefix: str = "") -> dict[str, float]:
    out = {}
    for k in keys:
        vals = np.array([r.scores.get(k, np.nan) for r in results], np.float64)
        finite = vals[np.isfinite(vals) | (vals == np.inf)]
        out[prefix + k] = float((np.median if "offset" in k else np.mean)(finite)) if len(finite) else float("nan")
    return out


def aggregate(results: list[ClipResult]) -> dict[str, float]:
    """Mean over clips of every score (median for the sync offsets; NaN-aware; NaN when no clip has it); the
    lip-sync scores also per speech group, as lipsync/<group>/<score>, with lipsync/<group>/clips."""
    keys = sorted({k for r in results for k in r.scores})
    out = _average(results, keys)
    lipsync = [k.removeprefix("lipsync/") for k in keys if k.startswith("lipsync/")]
    for group in GROUPS:
        members = [r for r in results if r.group == group]
        if members and lipsync:
            out[f"lipsync/{group}/clips"] = float(len(members))
            out.update(_average([ClipResult(r.clip_id, {k.removeprefix("lipsync/"): v for k, v in r.scores.items()},
                                            r.generated, r.real) for r in members], lipsync, f"lipsync/{group}/"))
    return out
