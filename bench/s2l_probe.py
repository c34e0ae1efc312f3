"""speech2latent alone, in seconds: lip sync of its predicted latents per speech group, read by a linear mouth
probe on the latent space, without decoding a frame.

The probe is ridge regression from the frozen encoder's latents of the TRAINING frames (`extract --dae`) to
the corpus' analytic mouth opening; it reads the held-out clips' own encoder latents as a ceiling ("encoder"
rows), and each run's predictions from the clips' speech (ground-truth pose given, as `evaluate` does by
default). Because the DiffAE decodes the encoder's latents to nearly the true mouth in the reference run
(`lipsync/r_dae` 0.985), these numbers track `evaluate`'s lip sync closely at a fraction of its cost; use them
to compare speech2latent variants on one DiffAE, and `evaluate` for the final figures.

`--speech-dir DIR --speakers A,B` also scores every utterance of those speakers of a speech folder (prompts
joined as `synth` joins them; truth from `articulation.mouth_track`, pose predicted by the run): hundreds of
held-out recordings without rendering a frame. Keep them out of training (`synth --held-out-speakers`).

Run: PYTHONPATH=. python bench/s2l_probe.py --data DATA --corpus CORPUS/clips --runs RUN [RUN ...] [--split test]
     [--speech-dir DIR --speakers fr_CA_f_June] [--json out.json]
Prints a Markdown table (r, amplitude = std predicted / std truth, mae; means over the clips of each group).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from daetalker_jax.data.clip_arrays import ClipArrays
from daetalker_jax.data.features import log_mel
from daetalker_jax.data.pipeline import clip_audio, data_source
from daetalker_jax.evaluation.suite import speech_groups
from daetalker_jax.metrics.lipsync import sync_scores
from daetalker_jax.media import SAMPLE_RATE
from daetalker_jax.synth import recordings
from daetalker_jax.synth.articulation import mouth_track
from daetalker_jax.synth.corpus import GROUPS
from daetalker_jax.synth.probe import opening_track
from daetalker_jax.trainers.base import load_trained

RIDGE = 1.0   # on z-normalised latents


def clip_ids(data: Path, split: str) -> list[tuple[str, int, dict]]:
    source = data_source(str(data), "clips", split)
    out = []
    for i in range(len(source)):
        ex = source[i]
        name = ex["clip_id"].decode() if isinstance(ex["clip_id"], bytes) else str(ex["clip_id"])
        out.append((name, int(ex["clip"]), ex))
    return out


class LatentProbe:
    """Mouth opening from a latent vector: ridge regression on z-normalised latents."""

    def __init__(self, latents: np.ndarray, opening: np.ndarray):
        self.mean, self.std = latents.mean(0), latents.std(0) + 1e-6
        x = (latents - self.mean) / self.std
        self.offset = opening.mean()
        self.w = np.linalg.solve(x.T @ x + RIDGE * np.eye(x.shape[1]), x.T @ (opening - self.offset))

    def __call__(self, latents: np.ndarray) -> np.ndarray:
        return (latents - self.mean) / self.std @ self.w + self.offset


def fit_probe(data: Path, corpus: Path) -> LatentProbe:
    arrays = ClipArrays(data, "latents")
    zs, ys = [], []
    for name, clip, _ in clip_ids(data, "train"):
        truth = opening_track(corpus, name)
        z = np.asarray(arrays[clip], np.float64)
        n = min(len(z), len(truth))
        zs.append(z[:n])
        ys.append(truth[:n])
    return LatentProbe(np.concatenate(zs), np.concatenate(ys))


def predictor(run: Path):
    """audio, pose -> latents of a speech2latent run, padded to a fixed length so it compiles once."""
    _, model = load_trained(run)
    graphdef, state = nnx.split(model)

    @jax.jit
    def predict(state, feats, mask, pose):
        return nnx.merge(graphdef, state).predict(feats, mask, pose)[0]

    @jax.jit
    def predict_free(state, feats, mask):
        return nnx.merge(graphdef, state).predict(feats, mask, None)[0]

    def run_clip(audio: np.ndarray, pose: np.ndarray | None, frames: int, length: int) -> np.ndarray:
        feats = np.pad(log_mel(audio, frames), ((0, 4 * (length - frames)), (0, 0)))[None]
        mask = (np.arange(length) < frames)[None]
        if pose is None:
            return np.asarray(predict_free(state, feats, mask))[0, :frames]
        pose = np.pad(pose[:frames], ((0, length - frames), (0, 0)))[None].astype(np.float32)
        return np.asarray(predict(state, feats, mask, pose))[0, :frames]
    return run_clip


def _mp3(audio: np.ndarray, kbps: int) -> np.ndarray:
    import io

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
    """How people record, done to the waveform (independent of the mel-domain training augmentation): a level
    of -30..0 dB, and each with its probability a room (exponentially decaying noise as the impulse response,
    RT60 0.2-0.8 s), pink or white noise at 5-25 dB SNR, a telephone line (300-3400 Hz, 8 kHz resampling) and
    an mp3 round trip at 24-64 kbit/s."""
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


def speaker_utterances(speech_dir: Path, speakers: list[str]) -> dict[str, np.ndarray]:
    """{speaker/index: 16 kHz audio} of every joined utterance of the speakers (as `synth` joins them)."""
    folders = recordings.list_speakers(speech_dir)
    out = {}
    for speaker in speakers:
        files = folders[speaker]
        for i, group in enumerate(recordings.utterances(files, [recordings.duration(f) for f in files])):
            out[f"{speaker}/{i:04d}"] = recordings.load_utterance(tuple(map(str, group)))
    return out


def score(tracks: dict[str, tuple[np.ndarray, np.ndarray]], group_of) -> dict[str, dict[str, float]]:
    per_clip = {name: sync_scores(pred, truth) for name, (pred, truth) in tracks.items()}
    out = {}
    for group in ("all",) + GROUPS:
        names = [n for n in per_clip if group == "all" or group_of(n) == group]
        if names:
            out[group] = {k: float(np.nanmean([per_clip[n][k] for n in names])) for k in ("r", "amplitude", "mae")}
            out[group]["clips"] = len(names)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="prepared dataset with extracted latents")
    p.add_argument("--corpus", type=Path, required=True, help="the synthetic corpus' clips folder (sidecars)")
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="speech2latent run folders")
    p.add_argument("--split", default="test")
    p.add_argument("--speech-dir", type=Path, default=None, help="a speech folder (synth.recordings)")
    p.add_argument("--speakers", default="", help="comma-separated speakers of --speech-dir to score")
    p.add_argument("--max-seconds", type=float, default=30.0, help="longer utterances are cut (one compile)")
    p.add_argument("--degraded", action="store_true",
                   help="also score each speaker's utterances degraded as people record (see `degrade`), seeded")
    p.add_argument("--json", type=Path, default=None, help="write the numbers here too")
    args = p.parse_args()
    speakers = [s for s in args.speakers.split(",") if s]
    extra = speaker_utterances(args.speech_dir, speakers) if args.speech_dir and speakers else {}
    extra = {k: a[:int(args.max_seconds * SAMPLE_RATE)] for k, a in extra.items()}
    extra_truth = {k: mouth_track(a)["opening"].astype(np.float64) for k, a in extra.items()}
    if args.degraded:   # the mouth is the clean speech's; only what the model hears changes
        for i, (k, a) in enumerate(list(extra.items())):
            speaker, rest = k.split("/")
            extra[f"{speaker}+degraded/{rest}"] = degrade(a, np.random.default_rng([7, i]))
            extra_truth[f"{speaker}+degraded/{rest}"] = extra_truth[k]
        speakers += [f"{s}+degraded" for s in speakers]
    probe = fit_probe(args.data, args.corpus)
    clips = clip_ids(args.data, args.split)
    group_of = speech_groups(args.corpus)
    truths = {name: opening_track(args.corpus, name) for name, _, _ in clips}
    encoder = ClipArrays(args.data, "latents")
    results = {"encoder": score({n: (probe(np.asarray(encoder[c], np.float64)), truths[n]) for n, c, _ in clips},
                                group_of)}
    length = max(int(ex["n_frames"]) for _, _, ex in clips)
    extra_length = max([len(t) for t in extra_truth.values()], default=0)

    def speaker_of(name: str) -> str | None:
        return name.split("/")[0] if "/" in name else None

    for run in args.runs:
        predict = predictor(run)
        tracks = {}
        for name, _, ex in clips:
            n = int(ex["n_frames"])
            z = predict(clip_audio(ex), np.asarray(ex["pose"], np.float32), n, length)
            tracks[name] = (probe(z.astype(np.float64)), truths[name][:n])
        results[str(run)] = score(tracks, group_of)
        if extra:
            spoken = {k: (probe(predict(a, None, len(extra_truth[k]), extra_length).astype(np.float64)), extra_truth[k])
                      for k, a in extra.items()}
            for speaker in speakers:
                results[str(run)][speaker] = score({k: v for k, v in spoken.items() if speaker_of(k) == speaker},
                                                   lambda _: None)["all"]
    groups = [g for g in ("all",) + GROUPS if g in results["encoder"]]
    if extra:
        for res in list(results.values())[1:]:
            groups += [s for s in speakers if s in res and s not in groups]
        for speaker in speakers:
            results["encoder"][speaker] = {"r": float("nan"), "amplitude": float("nan"), "mae": float("nan"),
                                           "clips": sum(speaker_of(k) == speaker for k in extra)}
    print("| latents | " + " | ".join(f"{g} r / amp / mae" for g in groups) + " |")
    print("|---" * (len(groups) + 1) + "|")
    for name, res in results.items():
        cells = [f"{res[g]['r']:.3f} / {res[g]['amplitude']:.2f} / {res[g]['mae']:.3f}" for g in groups]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("clips per group: " + ", ".join(f"{g} {results['encoder'][g]['clips']}" for g in groups))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
