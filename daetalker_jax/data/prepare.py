"""`prepare`: a folder (or manifest) of talking-head videos -> the TFDS/ArrayRecord dataset.

Per clip (in parallel, each written atomically to DATA_DIR/cache/<clip>.npz, so reruns skip them):
probe -> checks -> 16 kHz mono audio -> a fixed square crop around the face (stable over the clip)
-> frames resampled to 25 fps, cropped, resized, JPEG-encoded -> head pose per frame (synthetic
sidecar, else face-mesh PnP, smoothed) -> log-mel aligned to 4 mel frames per video frame.
Then both TFDS configs are written from the cache, and a summary lists every skipped clip with its reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter1d
from tqdm import tqdm

from daetalker_jax.data import clip_cache, features
from daetalker_jax.data.decode import SkipClip, frames_25fps, probe
from daetalker_jax.errors import UserError, atomic_path
from daetalker_jax.media import FPS, PCM_SCALE, SAMPLE_RATE, load_audio
from daetalker_jax.parallel import imap_unordered

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv"}
MAX_AV_MISMATCH_S = 0.5   # audio and video may differ by this much; the longer one is trimmed
DETECT_EVERY_S = 0.5      # face boxes for the crop are read this often


@dataclass(frozen=True)
class PrepareConfig:
    size: int = 128
    crop: str = "face"             # face | full | x,y,w,h (pixels of the source video)
    margin: float = 2.2            # crop side = margin x face height (head and shoulders)
    min_seconds: float = 2.0       # shorter clips are skipped
    allow_vfr: bool = False        # resample variable-frame-rate video instead of skipping it
    jpeg_quality: int = 95
    pose_smooth_frames: float = 2.0


@dataclass(frozen=True)
class ClipJob:
    index: int
    clip_id: str
    path: str
    split: str


def find_clips(videos: Path) -> list[ClipJob]:
    """A folder (all video files below it) or a manifest: the synthetic corpus' manifest.json, or a
    text/CSV file with one `path[,split]` per line (paths relative to the manifest)."""
    if not videos.exists():
        raise UserError(f"--videos {videos} does not exist")
    if videos.is_dir():
        paths = sorted(p for p in videos.rglob("*")
                       if p.suffix.lower() in VIDEO_EXTENSIONS and (p.is_file() or p.is_symlink()))
        entries = [(p, None) for p in paths]
    elif videos.suffix == ".json":
        manifest = json.loads(videos.read_text())
        entries = [(videos.parent / c["file"], c.get("split")) for c in manifest["clips"]]
    else:
        entries = []
        for line in videos.read_text().splitlines():
            parts = [s.strip() for s in line.split(",")]
            if parts[0] and not parts[0].startswith("#"):
                entries.append((videos.parent / parts[0], parts[1] if len(parts) > 1 and parts[1] else None))
    if not entries:
        raise UserError(f"no video files found in {videos} (extensions: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    jobs, seen = [], set()
    for i, (path, split) in enumerate(entries):
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem) or "clip"
        clip_id = stem if stem not in seen else f"{stem}_{i}"
        seen.add(clip_id)
        jobs.append(ClipJob(i, clip_id, str(path), split or _hash_split(str(path))))
    return jobs


def _hash_split(key: str) -> str:
    """90/5/5 train/val/test by a stable hash, for folders without a split."""
    h = int(hashlib.sha1(key.encode()).hexdigest(), 16) % 100
    return "train" if h < 90 else "val" if h < 95 else "test"


def _sidecar(path: Path) -> dict | None:
    side = path.with_suffix(".json")
    if side.exists():
        data = json.loads(side.read_text())
        if "frames" in data and "face_box" in data:
            return data
    return None


def _square(cx: float, cy: float, side: float, w: int, h: int) -> tuple[int, int, int]:
    """A square (x0, y0, side) of at most the frame's short side, shifted to stay inside the frame."""
    side = int(round(min(side, w, h)))
    x0 = int(round(np.clip(cx - side / 2, 0, w - side)))
    y0 = int(round(np.clip(cy - side / 2, 0, h - side)))
    return x0, y0, side


def crop_box(job: ClipJob, cfg: PrepareConfig, info, n_frames: int, side: dict | None,
             analyzer) -> tuple[int, int, int]:
    """The clip's square crop (x0, y0, side) in source pixels; face boxes from the sidecar or `analyzer`."""
    w, h = info.width, info.height
    if cfg.crop == "full":
        return _square(w / 2, h / 2, min(w, h), w, h)
    if cfg.crop != "face":
        x, y, bw, bh = (float(v) for v in cfg.crop.split(","))
        return _square(x + bw / 2, y + bh / 2, max(bw, bh), w, h)
    if side is not None:
        boxes = np.array(side["face_box"], float)
    else:
        boxes = []
        step = max(1, int(DETECT_EVERY_S * FPS))
        for k, frame in enumerate(frames_25fps(job.path, n_frames)):
            if k % step == 0:
                boxes.append(analyzer.box(frame) or (np.nan,) * 4)
        boxes = np.array(boxes, float)
        if np.isnan(boxes[:, 0]).mean() > 0.5:
            raise SkipClip("no face found (in more than half of the sampled frames)")
    x0, y0, x1, y1 = np.nanmedian(boxes, axis=0)   # one box for the whole clip: no per-frame jitter
    return _square((x0 + x1) / 2, (y0 + y1) / 2 - 0.05 * (y1 - y0), cfg.margin * (y1 - y0), w, h)


def pose_track(poses: list[tuple[float, float, float]], smooth_frames: float) -> np.ndarray:
    """Per-frame (yaw, pitch, roll) with NaN where no face was found -> gaps interpolated, Gaussian-smoothed
    (n, 3) float32; SkipClip when no frame had a face."""
    out = []
    for x in np.asarray(poses, np.float64).reshape(-1, 3).T:
        bad = np.isnan(x)
        if bad.all():
            raise SkipClip("no face found for head pose")
        x[bad] = np.interp(np.nonzero(bad)[0], np.nonzero(~bad)[0], x[~bad])
        out.append(gaussian_filter1d(x, smooth_frames))
    return np.stack(out, -1).astype(np.float32)


def process_clip(job: ClipJob, cfg: PrepareConfig, cache_dir: Path) -> dict:
    """Prepares one clip into the cache; raises SkipClip with the reason if it cannot be used."""
    if not Path(job.path).is_file():
        raise SkipClip("file not found (missing, or a broken link)")
    info = probe(job.path)
    if info.audio_seconds is None:
        raise SkipClip("no audio stream")
    if info.variable_rate and not cfg.allow_vfr:
        raise SkipClip("variable frame rate (rerun with --allow-vfr to resample it to 25 fps)")
    try:
        audio = load_audio(job.path)
    except UserError as e:
        raise SkipClip(f"audio: {e}") from e
    audio_s = len(audio) / SAMPLE_RATE
    if abs(audio_s - info.video_seconds) > MAX_AV_MISMATCH_S:
        raise SkipClip(f"audio ({audio_s:.2f} s) and video ({info.video_seconds:.2f} s) lengths differ")
    n = int(np.floor(min(audio_s, info.video_seconds) * FPS + 1e-6))
    if n < cfg.min_seconds * FPS:
        raise SkipClip(f"shorter than {cfg.min_seconds:g} s ({n / FPS:.2f} s)")
    side = _sidecar(Path(job.path))
    analyzer = None
    if side is None:   # real footage: face boxes for the crop and landmarks for the pose
        from daetalker_jax.data.face import FaceAnalyzer
        analyzer = FaceAnalyzer()
    x0, y0, s = crop_box(job, cfg, info, n, side, analyzer)
    jpegs, poses = [], []
    for frame in frames_25fps(job.path, n):
        crop = frame[y0:y0 + s, x0:x0 + s]
        if analyzer is not None:
            poses.append(analyzer.pose(crop) or (np.nan,) * 3)
        img = Image.fromarray(crop)
        if s != cfg.size:
            img = img.resize((cfg.size, cfg.size), Image.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=cfg.jpeg_quality)
        jpegs.append(buf.getvalue())
    if side is not None:
        pose = np.stack([np.asarray(side["frames"][k], np.float32)[:n] for k in ("yaw", "pitch", "roll")], -1)
        pose_source = "sidecar"
    else:
        pose = pose_track(poses, cfg.pose_smooth_frames)
        pose_source = "face mesh PnP"
    audio = audio[: n * SAMPLE_RATE // FPS]
    audio = np.pad(audio, (0, n * SAMPLE_RATE // FPS - len(audio)))
    mel = features.log_mel(audio, n)
    meta = {"index": job.index, "clip_id": job.clip_id, "source": job.path, "split": job.split, "n_frames": n,
            "crop": [x0, y0, s], "size": cfg.size, "pose_source": pose_source}
    clip_cache.save_clip(cache_dir, job.clip_id, jpegs, (np.clip(audio, -1, 1) * PCM_SCALE).astype(np.int16),
                         mel, pose, meta)
    return meta


def _work(args: tuple[ClipJob, PrepareConfig, Path]) -> tuple[ClipJob, dict | None, str | None]:
    job, cfg, cache_dir = args
    try:
        return job, process_clip(job, cfg, cache_dir), None
    except SkipClip as e:
        return job, None, str(e)
    except Exception as e:  # noqa: BLE001 - one bad clip must not stop the whole job
        return job, None, f"unexpected error: {type(e).__name__}: {e}"


def prepare(videos: Path, out: Path, cfg: PrepareConfig, workers: int = 1) -> dict:
    """Prepares every clip (resuming), writes the TFDS dataset and summary.json; returns the summary."""
    from daetalker_jax.data.tfds_builder import write_dataset

    jobs = find_clips(videos)
    cache_dir = out / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    settings = out / "prepare.json"
    wanted = {"size": cfg.size, "crop": cfg.crop, "margin": cfg.margin, "jpeg_quality": cfg.jpeg_quality}
    if settings.exists() and json.loads(settings.read_text()) != wanted:
        raise UserError(f"{out} was prepared with other settings ({settings}); use a new --out or delete it")
    with atomic_path(settings) as tmp:
        tmp.write_text(json.dumps(wanted))
    for stale in cache_dir.glob(".tmp-*"):
        stale.unlink()
    start = time.time()
    done = {j.clip_id: clip_cache.load_clip(cache_dir, j.clip_id).meta
            for j in jobs if clip_cache.clip_path(cache_dir, j.clip_id).exists()}
    pending = [(j, cfg, cache_dir) for j in jobs if j.clip_id not in done]
    skipped: dict[str, str] = {}
    bar = tqdm(total=len(jobs), initial=len(done), desc="prepare clips", unit="clip")
    for job, meta, reason in imap_unordered(_work, pending, workers):
        if meta is None:
            skipped[job.path] = reason
        else:
            done[job.clip_id] = meta
        bar.update()
    bar.close()
    usable = [j for j in jobs if j.clip_id in done]
    if not usable:
        details = "; ".join(f"{Path(p).name}: {r}" for p, r in skipped.items())
        raise UserError(f"no usable clips in {videos} ({details})")
    splits = {s: [j.clip_id for j in usable if j.split == s] for s in ("train", "val", "test")}
    write_dataset(out, cache_dir, splits, cfg.size)
    n_frames = sum(done[j.clip_id]["n_frames"] for j in usable)
    summary = {"clips": len(usable), "frames": n_frames, "hours": round(n_frames / FPS / 3600, 4),
               "splits": {k: len(v) for k, v in splits.items()}, "size": cfg.size,
               "skipped": [{"file": p, "reason": r} for p, r in sorted(skipped.items())],
               "seconds": round(time.time() - start, 1)}
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    return summary
