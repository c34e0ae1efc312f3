"""Plans and writes the synthetic corpus: one mp4 per utterance (25 fps + 16 kHz speech), a JSON
sidecar of per-frame ground truth per clip, a manifest with train/val/test splits.

Layout of OUT:
  corpus.json            the settings the corpus was made with (a resumed run must match them)
  clips/<id>.mp4         H.264 video + AAC speech, like any real talking-head dataset
  clips/<id>.json        ground truth: mouth track, yaw/pitch/roll, blink, face box, metadata
  manifest.json          every clip with its split, text, voice, duration; written last
  preview.png            contact sheet (written by the CLI)
Validation and test clips speak sentences never used in training; half of the test clips use a
held-out voice. With a speech folder of real recordings (`recordings.py`), a share of the minutes comes from
its speakers (train/val/test per speaker) and every clip of its held-out speakers is a test clip. Each clip
has a `group` saying whose speech it is, for scores per group: tts_seen / tts_held_out (espeak-ng training or
held-out voices), real_seen / real_held_out (recorded speakers heard in training or never), user (`--speech`
files). Every file is written under a temporary name and renamed when complete, so an
interrupted run resumes by skipping the clips whose mp4 and sidecar both exist.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from daetalker_jax.errors import UserError, atomic_path
from daetalker_jax.media import FPS, SAMPLE_RATE, load_audio, write_mp4
from daetalker_jax.parallel import imap_unordered
from daetalker_jax.synth import articulation, motion, recordings, speech
from daetalker_jax.synth.identity import Identity
from daetalker_jax.synth.render import FrameState, Renderer

SPLIT_CYCLE = ("train", "val", "test") + ("train",) * 7   # ~80/10/10, every split present from 3 clips
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ClipSpec:
    clip_id: str
    split: str
    identity: int
    seed: int
    text: str | None = None
    voice: str | None = None
    speed: int = 155
    pitch: int = 50
    speech_file: str | None = None
    recordings: tuple[str, ...] = ()   # recorded prompts joined into this clip's speech
    group: str = "tts_seen"


GROUPS = ("tts_seen", "tts_held_out", "real_seen", "real_held_out", "user")


@dataclass(frozen=True)
class CorpusSettings:
    minutes: float
    size: int
    seed: int
    identities: int
    voices: tuple[str, ...]
    held_out_voices: tuple[str, ...]
    sentences: tuple[str, ...]
    speech_files: tuple[str, ...] = ()
    speech_dir: str | None = None            # real recordings, one subfolder per speaker
    held_out_speakers: tuple[str, ...] = ()  # its speakers kept for the test split
    real_share: float = 0.5                  # of `minutes`, from the recordings when speech_dir is set


def _estimate_seconds(text: str, speed: int) -> float:
    return 0.75 * len(text.split()) / (speed / 60) + 0.5


def plan(settings: CorpusSettings) -> list[ClipSpec]:
    """Deterministic clip list for the settings: enough TTS clips for `minutes` of speech (less the real
    share when there is a speech folder), then the recorded clips, then one test clip per user speech file."""
    if not settings.sentences:
        raise UserError("the sentence list is empty; give a --sentences file with one sentence per line")
    if not settings.voices or not settings.held_out_voices:
        raise UserError("need at least one training voice and one held-out voice")
    for voice in settings.voices + settings.held_out_voices:
        speech.check_voice(voice)
    rng = np.random.default_rng([settings.seed, 31337])
    order = rng.permutation(len(settings.sentences))
    n_eval = max(1, len(order) // 10) if len(order) >= 3 else 0
    pools = {"val": order[:n_eval], "test": order[n_eval:2 * n_eval], "train": order[2 * n_eval:]}
    if n_eval == 0:   # too few sentences to hold any out: every split reuses them, said in the manifest
        pools = {"train": order, "val": order, "test": order}
    used = {k: 0 for k in pools}
    clips: list[ClipSpec] = []
    total = 0.0
    tts_seconds = settings.minutes * 60 * (1 - settings.real_share if settings.speech_dir else 1)
    while total < tts_seconds or len(clips) < 3:
        i = len(clips)
        split = SPLIT_CYCLE[i % len(SPLIT_CYCLE)]
        text = settings.sentences[pools[split][used[split] % len(pools[split])]]
        used[split] += 1
        held_out = split == "test" and used["test"] % 2 == 1
        voices = settings.held_out_voices if held_out else settings.voices
        speed = int(rng.choice(speech.SPEEDS))
        clips.append(ClipSpec(
            clip_id=f"{split}_{i:05d}", split=split, identity=i % settings.identities, seed=int(rng.integers(2**31)),
            text=text, voice=str(voices[rng.integers(len(voices))]), speed=speed,
            pitch=int(rng.choice(speech.PITCHES)), group="tts_held_out" if held_out else "tts_seen"))
        total += _estimate_seconds(text, speed)
    if settings.speech_dir:
        held_out_tts = sum(c.group == "tts_held_out" for c in clips)
        clips += _recorded_clips(settings, rng, len(clips), test_clips_per_held_out=max(2, held_out_tts))
    for j, path in enumerate(settings.speech_files):
        clips.append(ClipSpec(clip_id=f"user_{j:03d}", split="test", identity=0, seed=int(rng.integers(2**31)),
                              speech_file=str(Path(path).resolve()), group="user"))
    return clips


def _recorded_clips(settings: CorpusSettings, rng: np.random.Generator, first: int, test_clips_per_held_out: int
                    ) -> list[ClipSpec]:
    """Clips of the speech folder: each training speaker gets an equal part of the real minutes, its joined
    utterances in a seeded order, the splits cycling train/val/test as the TTS clips do; each held-out speaker
    gives `test_clips_per_held_out` test clips."""
    speakers = recordings.list_speakers(Path(settings.speech_dir))
    unknown = sorted(set(settings.held_out_speakers) - set(speakers))
    if unknown:
        raise UserError(f"held-out speaker(s) {', '.join(unknown)} not in {settings.speech_dir}; its speakers: "
                        f"{', '.join(speakers)}")
    seen = [s for s in speakers if s not in settings.held_out_speakers]
    if not seen:
        raise UserError(f"every speaker of {settings.speech_dir} is held out; keep at least one for training")
    budget = settings.minutes * 60 * settings.real_share / len(seen)
    clips: list[ClipSpec] = []
    cycle = 0   # one train/val/test cycle over all training speakers' clips: ~80/10/10 however few each gives
    for speaker, files in speakers.items():
        durations = {f: recordings.duration(f) for f in files}
        groups = recordings.utterances(files, list(durations.values()))
        words = recordings.transcripts(Path(settings.speech_dir) / speaker)
        held_out, total = speaker in settings.held_out_speakers, 0.0
        for j, k in enumerate(rng.permutation(len(groups))):
            if (held_out and j >= test_clips_per_held_out) or (not held_out and total >= budget):
                break
            split = "test" if held_out else SPLIT_CYCLE[cycle % len(SPLIT_CYCLE)]
            cycle += not held_out
            names = [str(f.relative_to(Path(settings.speech_dir) / speaker).with_suffix("")) for f in groups[k]]
            i = first + len(clips)
            clips.append(ClipSpec(
                clip_id=f"{split}_{i:05d}", split=split, identity=i % settings.identities,
                seed=int(rng.integers(2**31)), text=" ".join(words.get(n, "") for n in names).strip() or None,
                voice=speaker, recordings=tuple(str(f.resolve()) for f in groups[k]),
                group="real_held_out" if held_out else "real_seen"))
            total += sum(durations[f] for f in groups[k])
    return clips


def clip_group(row: dict, held_out_voices: Sequence[str]) -> str:
    """A manifest row's or sidecar's speech group (GROUPS); rows of corpora made before groups existed get
    theirs from the voice."""
    if "group" in row:
        return row["group"]
    if row.get("speech_file"):
        return "user"
    return "tts_held_out" if row.get("voice") in held_out_voices else "tts_seen"


def speech_for(spec: ClipSpec) -> np.ndarray:
    """The clip's audio (16 kHz mono): TTS, or the user's file; rejects silence-only files."""
    if spec.recordings:
        return recordings.load_utterance(spec.recordings)
    if spec.speech_file is None:
        return speech.synthesize(spec.text, spec.voice, spec.speed, spec.pitch)
    audio = load_audio(spec.speech_file)
    if articulation.loudness(audio).max() < 0.2 or np.abs(audio).max() < 1e-3:
        raise UserError(f"speech file {spec.speech_file} holds only silence; give a recording with speech")
    return audio


@lru_cache(maxsize=8)
def _renderer(identity: int, size: int) -> Renderer:
    return Renderer(Identity.from_seed(identity), size)


def ground_truth(audio: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Per-frame mouth track and head motion for one utterance."""
    mouth = articulation.mouth_track(audio)
    n = len(mouth["opening"])
    loud100 = articulation.loudness(audio)
    loud = np.interp((np.arange(n) + 0.5) / FPS * 100, np.arange(len(loud100)), loud100)
    return {**mouth, **motion.head_motion(loud, np.random.default_rng([seed, 2]))}


def frame_states(gt: dict[str, np.ndarray]) -> list[FrameState]:
    """The renderer's per-frame input from a clip's ground truth."""
    return [FrameState(yaw=gt["yaw"][k], pitch=gt["pitch"][k], roll=gt["roll"][k], opening=gt["opening"][k],
                       width=gt["width"][k], rounding=gt["rounding"][k], blink=gt["blink"][k],
                       shoulder=(gt["shoulder_x"][k], gt["shoulder_y"][k])) for k in range(len(gt["opening"]))]


def render_clip(spec: ClipSpec, size: int, out_dir: Path) -> dict:
    """Synthesizes, renders and writes one clip; returns its manifest row."""
    audio = speech_for(spec)
    gt = ground_truth(audio, spec.seed)
    n = len(gt["opening"])
    audio = np.pad(audio, (0, max(0, n * SAMPLE_RATE // FPS - len(audio))))[: n * SAMPLE_RATE // FPS]
    renderer = _renderer(spec.identity, size)
    states = frame_states(gt)
    row = {**asdict(spec), "file": f"clips/{spec.clip_id}.mp4", "sidecar": f"clips/{spec.clip_id}.json",
           "n_frames": n, "duration": n / FPS, "size": size}
    sidecar = {"format_version": FORMAT_VERSION, "fps": FPS, "sample_rate": SAMPLE_RATE, **row,
               "articulation": {"lead_ms": articulation.LEAD_MS, "smooth_ms": articulation.SMOOTH_MS},
               "frames": {k: np.round(v, 4).tolist() for k, v in gt.items()},
               "face_box": np.round([renderer.face_box(s) for s in states], 2).tolist()}
    # Sidecar first, mp4 last: a clip counts as finished only once its mp4 exists.
    with atomic_path(out_dir / f"{spec.clip_id}.json") as tmp:
        tmp.write_text(json.dumps(sidecar))
    write_mp4(out_dir / f"{spec.clip_id}.mp4", (renderer.render(s) for s in states), audio)
    return row


def _is_done(spec: ClipSpec, out_dir: Path) -> bool:
    return (out_dir / f"{spec.clip_id}.mp4").exists() and (out_dir / f"{spec.clip_id}.json").exists()


def _work(args: tuple[ClipSpec, int, Path]) -> dict:
    return render_clip(*args)


def _row_from_sidecar(spec: ClipSpec, out_dir: Path) -> dict:
    side = json.loads((out_dir / f"{spec.clip_id}.json").read_text())
    return {**asdict(spec), **{k: side[k] for k in ("file", "sidecar", "n_frames", "duration", "size")}}


def build(settings: CorpusSettings, out: Path, workers: int = 1) -> dict:
    """Writes (or resumes) the corpus under `out`; returns the manifest. Bad settings or user audio stop it
    before anything is written."""
    clips_dir = out / "clips"
    record = out / "corpus.json"
    wanted = {"format_version": FORMAT_VERSION, **asdict(settings)}
    wanted = json.loads(json.dumps(wanted))
    if record.exists():   # settings added since a corpus was made count as their defaults
        defaults = {f.name: f.default for f in fields(CorpusSettings) if f.default is not MISSING}
        if {**json.loads(json.dumps(defaults)), **json.loads(record.read_text())} != wanted:
            raise UserError(f"{out} holds a corpus made with other settings (see {record}); "
                            "use a new --out, or delete that folder to rebuild it")
    specs = plan(settings)
    for spec in specs:   # fail on bad user audio before writing anything
        if spec.speech_file is not None:
            speech_for(spec)
    clips_dir.mkdir(parents=True, exist_ok=True)
    if not record.exists():
        with atomic_path(record) as tmp:
            tmp.write_text(json.dumps(wanted, indent=1))
    pending = [s for s in specs if not _is_done(s, clips_dir)]
    for stale in clips_dir.glob(".tmp-*"):   # left by an interrupted run
        stale.unlink()
    rows = {s.clip_id: _row_from_sidecar(s, clips_dir) for s in specs if _is_done(s, clips_dir)}
    bar = tqdm(total=len(specs), initial=len(specs) - len(pending), desc="synth clips", unit="clip")
    for row in imap_unordered(_work, [(s, settings.size, clips_dir) for s in pending], workers):
        rows[row["clip_id"]] = row
        bar.update()
    bar.close()
    ordered = [rows[s.clip_id] for s in specs]
    manifest = {
        "format_version": FORMAT_VERSION, "fps": FPS, "sample_rate": SAMPLE_RATE, "size": settings.size,
        "splits": {k: [r["clip_id"] for r in ordered if r["split"] == k] for k in ("train", "val", "test")},
        "held_out_voices": list(settings.held_out_voices),
        "held_out_speakers": list(settings.held_out_speakers),
        "groups": {g: sum(r["group"] == g for r in ordered) for g in GROUPS},
        "minutes": round(sum(r["duration"] for r in ordered) / 60, 3),
        "clips": ordered,
    }
    with atomic_path(out / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))
    return manifest
