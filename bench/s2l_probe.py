"""speech2latent alone, in seconds: lip sync of its predicted latents per speech group, read by a linear mouth
probe on the latent space, without decoding a frame.

The probe is ridge regression from the frozen encoder's latents of the TRAINING frames (`extract --dae`) to the
corpus' analytic mouth opening. It reads each held-out clip's own encoder latents (the "encoder" row: the
ceiling) and each run's predictions from the clip's speech (ground-truth pose given, as `evaluate` does). Where
the DiffAE decodes the encoder's latents to the true mouth (`lipsync/r_dae` 0.985 in the reference run), these
numbers track `evaluate`'s lip sync at a fraction of its cost: use them to compare speech2latent variants on one
DiffAE, and `evaluate` for final figures.

`--speech-dir DIR --speakers A,B` also scores every utterance of those speakers of a speech folder (prompts joined
as `synth` joins them; truth from `articulation.mouth_track`; pose predicted): hundreds of held-out recordings
without rendering a frame. Keep them out of training (`synth --held-out-speakers`). `--degraded` scores every
clip and utterance a second time degraded as people record (`degrade`: waveform processing, independent of the
mel-domain training augmentation), as the set "<set>+degraded".

Run: PYTHONPATH=. python bench/s2l_probe.py --data DATA --corpus CORPUS/clips --runs RUN [RUN ...]
     [--speech-dir DIR --speakers fr_CA_f_June] [--degraded] [--json out.json]
Prints a Markdown table of r / amplitude (std predicted / std truth) / mae, the means over each set's clips.
"""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from daetalker_jax.data.clip_arrays import ClipArrays
from daetalker_jax.data.features import log_mel
from daetalker_jax.data.pipeline import clip_audio, clip_name, data_source
from daetalker_jax.evaluation.suite import speech_groups
from daetalker_jax.media import SAMPLE_RATE
from daetalker_jax.metrics.lipsync import sync_scores
from daetalker_jax.synth import recordings
from daetalker_jax.synth.articulation import mouth_track
from daetalker_jax.synth.corpus import GROUPS
from daetalker_jax.synth.probe import opening_track
from daetalker_jax.trainers.base import load_trained

RIDGE = 1.0   # on z-normalised latents
GROUP_SETS = GROUPS + ("no_group",)   # the test clips' sets; speakers and degraded copies are not in "all"


@dataclass
class Item:
    set: str                      # speech group, speaker, or either + "+degraded"
    audio: np.ndarray             # 16 kHz float
    truth: np.ndarray             # mouth opening per frame
    pose: np.ndarray | None       # degrees per frame, or None: predicted
    clip: int | None = None       # the dataset's clip index (its encoder latents), for test clips


class LatentProbe:
    """Mouth opening from a latent vector: ridge regression on z-normalised latents."""

    def __init__(self, latents: np.ndarray, opening: np.ndarray):
        self.mean, self.std = latents.mean(0), latents.std(0) + 1e-6
        x = (latents - self.mean) / self.std
        self.offset = opening.mean()
        self.w = np.linalg.solve(x.T @ x + RIDGE * np.eye(x.shape[1]), x.T @ (opening - self.offset))

    def __call__(self, latents: np.ndarray) -> np.ndarray:
        return (np.asarray(latents, np.float64) - self.mean) / self.std @ self.w + self.offset


def _clips(data: Path, split: str):
    source = data_source(str(data), "clips", split)
    for i in range(len(source)):
        yield clip_name(source[i]), source[i]


def fit_probe(data: Path, corpus: Path) -> LatentProbe:
    arrays, zs, ys = ClipArrays(data, "latents"), [], []
    for name, ex in _clips(data, "train"):
        truth, z = opening_track(corpus, name), np.asarray(arrays[int(ex["clip"])], np.float64)
        n = min(len(z), len(truth))
        zs.append(z[:n])
        ys.append(truth[:n])
    return LatentProbe(np.concatenate(zs), np.concatenate(ys))


def _mp3(audio: np.ndarray, kbps: int) -> np.ndarray:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=SAMPLE_RATE, layout="mono")
        stream.bit_rate = kbps * 1000
        frame = av.AudioFrame.from_ndarray((np.clip(audio, -1, 1) * 32767).astype(np.int16)[None], format="s16",
                                           layout="mono")
        frame.rate = SAMPLE_RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    buf.seek(0)
    with av.open(buf) as container:   # PyAV's decoder removes the encoder's delay
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(container.streams.audio[0])])
    return np.pad(decoded, (0, max(0, len(audio) - len(decoded))))[:len(audio)].astype(np.float32)


def degrade(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """How people record, done to the waveform: each with its probability a room (exponentially decaying noise as
    the impulse response, RT60 0.2-0.8 s), white or pink noise at 5-25 dB SNR, a telephone line (300-3400 Hz,
    8 kHz resampling); then a level of -30..0 dB and, with its probability, an mp3 round trip at 24-64 kbit/s."""
    from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

    x = audio.astype(np.float64)
    if rng.random() < 0.5:
        rt60 = rng.uniform(0.2, 0.8)
        t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
        rir = rng.normal(size=len(t)) * np.exp(-6.9 * t / rt60) * 10 ** (-rng.uniform(0, 10) / 20) * 0.1
        rir[0] = 1.0
        x = fftconvolve(x, rir)[:len(x)]
    if rng.random() < 0.5:
        noise = rng.normal(size=len(x))
        if rng.random() < 0.5:   # pink: 1/f power
            spectrum = np.fft.rfft(noise)
            spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
            noise = np.fft.irfft(spectrum, len(x))
        loud = np.sort(x ** 2)[len(x) // 2:].mean()
        x = x + noise * np.sqrt(loud / np.mean(noise ** 2) / 10 ** (rng.uniform(5, 25) / 10))
    if rng.random() < 0.3:
        x = sosfilt(butter(4, (300, 3400), "bandpass", fs=SAMPLE_RATE, output="sos"), x)
        x = resample_poly(resample_poly(x, 1, 2), 2, 1)[:len(x)]
    x = x / max(np.abs(x).max(), 1e-6) * 10 ** (rng.uniform(-30, 0) / 20)
    if rng.random() < 0.3:
        x = _mp3(x.astype(np.float32), int(rng.choice([24, 32, 64])))
    return x.astype(np.float32)


def items(args) -> list[Item]:
    """The test split's clips by speech group, the speech folder's utterances by speaker, and their degraded
    copies (seeded by position)."""
    group_of = speech_groups(args.corpus)
    out = [Item(group_of(name) or "no_group", clip_audio(ex), opening_track(args.corpus, name)[:int(ex["n_frames"])],
                np.asarray(ex["pose"], np.float32), int(ex["clip"])) for name, ex in _clips(args.data, args.split)]
    speakers = [s for s in args.speakers.split(",") if s]
    if speakers:
        folders = recordings.list_speakers(args.speech_dir)
        for speaker in speakers:
            files = folders[speaker]
            for group in recordings.utterances(files, [recordings.duration(f) for f in files]):
                audio = recordings.load_utterance(tuple(map(str, group)))[:int(args.max_seconds * SAMPLE_RATE)]
                out.append(Item(speaker, audio, mouth_track(audio)["opening"].astype(np.float64), None))
    if args.degraded:   # the mouth is the clean speech's; only what the model hears changes
        out += [Item(f"{it.set}+degraded", degrade(it.audio, np.random.default_rng([7, i])), it.truth, it.pose)
                for i, it in enumerate(list(out))]
    return out


def predictor(run: Path, length: int):
    """(audio, pose or None, frames) -> latents of a speech2latent run; inputs padded to `length` frames so it
    compiles once per pose mode."""
    _, model = load_trained(run)
    graphdef, state = nnx.split(model)

    @jax.jit
    def given(state, feats, mask, pose):
        return nnx.merge(graphdef, state).predict(feats, mask, pose)[0]

    @jax.jit
    def free(state, feats, mask):
        return nnx.merge(graphdef, state).predict(feats, mask, None)[0]

    def predict(audio: np.ndarray, pose: np.ndarray | None, frames: int) -> np.ndarray:
        feats = np.pad(log_mel(audio, frames), ((0, 4 * (length - frames)), (0, 0)))[None]
        mask = (np.arange(length) < frames)[None]
        if pose is None:
            return np.asarray(free(state, feats, mask))[0, :frames]
        pose = np.pad(pose[:frames], ((0, length - frames), (0, 0)))[None].astype(np.float32)
        return np.asarray(given(state, feats, mask, pose))[0, :frames]
    return predict


def score(tracks: list[tuple[str, np.ndarray, np.ndarray]]) -> dict[str, dict[str, float]]:
    """{set: mean r, amplitude, mae and clip count}; "all" is every clean test clip."""
    per_set: dict[str, list[dict]] = {}
    for name, predicted, truth in tracks:
        for key in {name, "all"} if name in GROUP_SETS else {name}:
            per_set.setdefault(key, []).append(sync_scores(predicted, truth))
    return {k: {**{m: float(np.nanmean([s[m] for s in v])) for m in ("r", "amplitude", "mae")}, "clips": len(v)}
            for k, v in per_set.items()}



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="prepared dataset with extracted latents")
    p.add_argument("--corpus", type=Path, required=True, help="the synthetic corpus' clips folder (sidecars)")
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="speech2latent run folders")
    p.add_argument("--split", default="test")
    p.add_argument("--speech-dir", type=Path, default=None, help="a speech folder (synth.recordings)")
    p.add_argument("--speakers", default="", help="comma-separated speakers of --speech-dir to score")
    p.add_argument("--max-seconds", type=float, default=30.0, help="longer utterances are cut (one compile)")
    p.add_argument("--degraded", action="store_true", help="also score everything degraded as people record")
    p.add_argument("--json", type=Path, default=None, help="write the numbers here too")
    args = p.parse_args()
    probe, scored = fit_probe(args.data, args.corpus), items(args)
    encoder = ClipArrays(args.data, "latents")
    results = {"encoder": score([(it.set, probe(encoder[it.clip][:len(it.truth)]), it.truth)
                                 for it in scored if it.clip is not None])}
    length = max(len(it.truth) for it in scored)
    for run in args.runs:
        predict = predictor(run, length)
        results[str(run)] = score([(it.set, probe(predict(it.audio, it.pose, len(it.truth))), it.truth)
                                   for it in scored])
    sets = sorted({s for res in results.values() for s in res}, key=lambda s: (s != "all", "+" in s, s))
    print("| latents | " + " | ".join(f"{s} r / amp / mae" for s in sets) + " |")
    print("|---" * (len(sets) + 1) + "|")
    for name, res in results.items():
        cells = [f"{res[s]['r']:.3f} / {res[s]['amplitude']:.2f} / {res[s]['mae']:.3f}" if s in res else "-"
                 for s in sets]
        print(f"| {name} | " + " | ".join(cells) + " |")
    counts = results[str(args.runs[0])]
    print("clips per set: " + ", ".join(f"{s} {counts[s]['clips']}" for s in sets if s in counts))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
