"""Real recorded speech for the corpus: a folder of recordings, one subfolder per speaker, and a fetcher for
the professional voice prompts that Debian ships (the Asterisk core sounds: about 2 hours in 5 voices with
transcripts, CC-BY-SA 3.0 / CC-BY 3.0).

The mouth ground truth is a function of the audio alone (`articulation.py`), so any recording, in any
language, drives training clips exactly as TTS does.

A speech folder:
  DIR/<speaker>/**/<name>.(wav|flac|mp3|m4a|ogg|opus)   any rate, stereo is mixed down
  DIR/<speaker>/transcripts.tsv                          optional: relative path without suffix <TAB> text
  DIR/recordings.json                                    optional: {"held_out": [speaker, ...]}, the default
                                                         speakers kept out of training
Short prompts are joined in file-name order into utterances of at least JOIN_SECONDS (each trimmed to 0.2 s
of silence at both ends), so a 4-second training window sees continuous speech.

`python -m daetalker_jax.synth.recordings --out DIR` fetches the Asterisk prompts with `apt-get download`
(no root needed), unpacks the .deb files in Python and decodes the G.722 audio with PyAV into DIR as 16 kHz
FLAC. On a machine without apt, copy the .deb files into DIR/debs/ first (from a machine with apt, or
packages.debian.org): they are used as found.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np

from daetalker_jax.errors import HelpFormatter, UserError, atomic_path, run_cli

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac", ".webm")
JOIN_SECONDS = 4.0
ASTERISK_VOICES = ("en", "es", "fr", "it", "ru")
ASTERISK_HELD_OUT = ("fr_CA_f_June",)   # the default speaker kept for testing: a voice heard by no other prompt
_SKIPPED_FOLDERS = ("silence",)          # Asterisk's silence prompts


# ---- reading a speech folder ----

def list_speakers(root: Path) -> dict[str, list[Path]]:
    """{speaker: sorted audio files} of a speech folder; raises UserError when it holds none."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--speech-dir {root} is not a folder; give a folder with one subfolder of recordings per "
                        "speaker (`python -m daetalker_jax.synth.recordings --out DIR` makes one)")
    speakers = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "debs"):
        files = sorted(f for f in sub.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and not f.name.startswith("."))
        if files:
            speakers[sub.name] = files
    if not speakers:
        raise UserError(f"--speech-dir {root} has no speaker subfolders with audio files ({', '.join(AUDIO_SUFFIXES)})")
    return speakers


def default_held_out(root: Path) -> tuple[str, ...]:
    """The held-out speakers a speech folder suggests (its recordings.json), else none."""
    meta = Path(root) / "recordings.json"
    return tuple(json.loads(meta.read_text()).get("held_out", ())) if meta.is_file() else ()


def transcripts(speaker_dir: Path) -> dict[str, str]:
    path = speaker_dir / "transcripts.tsv"
    if not path.is_file():
        return {}
    rows = (line.split("\t", 1) for line in path.read_text().splitlines() if "\t" in line)
    return {name: text.strip() for name, text in rows}


def duration(path: Path) -> float:
    """Seconds of audio in a file, from its container (no decoding)."""
    import av

    try:
        with av.open(str(path)) as container:
            if container.duration is not None:
                return container.duration / 1e6
            stream = container.streams.audio[0]
            return float(stream.duration * stream.time_base)
    except (av.error.FFmpegError, IndexError, TypeError) as e:
        raise UserError(f"cannot read {path} as audio ({e}); remove it from the speech folder") from e


def utterances(files: list[Path], seconds: list[float], join_seconds: float = JOIN_SECONDS
               ) -> list[tuple[Path, ...]]:
    """Consecutive files joined until each group holds at least `join_seconds` (the last group may be shorter
    if it is at least half of that, else it joins the one before)."""
    groups: list[list[Path]] = []
    total = join_seconds
    for f, s in zip(files, seconds):
        if total >= join_seconds:
            groups.append([])
            total = 0.0
        groups[-1].append(f)
        total += s
    if len(groups) > 1 and total < join_seconds / 2:
        groups[-2].extend(groups.pop())
    return [tuple(g) for g in groups]


def load_utterance(files: tuple[str, ...]) -> np.ndarray:
    """The files' audio at 16 kHz, each trimmed to 0.2 s of silence at its ends, one after another."""
    from daetalker_jax.media import load_audio
    from daetalker_jax.synth.speech import trim_silence

    return np.concatenate([trim_silence(load_audio(f)) for f in files]).astype(np.float32)


# ---- fetching Debian's Asterisk prompts ----

def _ar_members(deb: Path) -> dict[str, bytes]:
    """The members of a .deb (a Unix `ar` archive)."""
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise UserError(f"{deb} is not a Debian package (.deb); delete it and fetch again")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
        members[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + size % 2
    return members


def _deb_files(deb: Path) -> tarfile.TarFile:
    members = _ar_members(deb)
    name = next((n for n in members if n.startswith("data.tar")), None)
    if name is None or name.endswith(".zst"):
        raise UserError(f"{deb} has no data.tar.xz/.gz member this reader can open")
    return tarfile.open(fileobj=io.BytesIO(members[name]))


def _download(packages: list[str], debs: Path) -> None:
    missing = [p for p in packages if not list(debs.glob(f"{p}_*.deb"))]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise UserError(f"apt-get is not available to fetch {', '.join(missing)}: copy those .deb files (Debian "
                        f"bookworm, from a machine with apt: `apt-get download NAME`) into {debs} and rerun")
    result = subprocess.run(["apt-get", "download", *missing], cwd=debs, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"`apt-get download {' '.join(missing)}` failed: {result.stderr.strip()[-500:]} "
                        f"(run `sudo apt-get update` first, or copy the .deb files into {debs})")


def _decode_g722(data: bytes) -> np.ndarray:
    import av

    with av.open(io.BytesIO(data), format="g722") as container:
        stream = container.streams.audio[0]
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(stream)]
    return np.concatenate(frames).astype(np.int16) if frames else np.zeros(0, np.int16)


def write_flac(path: Path, pcm: np.ndarray, rate: int = 16_000) -> None:
    """int16 mono samples -> a FLAC file, written atomically."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="flac") as out:
            stream = out.add_stream("flac", rate=rate, layout="mono")
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)


def _transcript_lines(deb: Path) -> dict[str, str]:
    with _deb_files(deb) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith(".txt.gz")), None)
        if member is None:
            return {}
        text = gzip.decompress(tar.extractfile(member).read()).decode("utf-8", errors="replace")
    rows = (line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith(";"))
    return {name.strip(): words.strip() for name, words in rows}


def fetch_asterisk(out: Path, voices: tuple[str, ...] = ASTERISK_VOICES) -> dict:
    """Fetches and decodes the Asterisk prompts of `voices` (language codes) into `out` (see the module
    docstring); tone and silence prompts are left out. Returns the folder's recordings.json. Reruns skip
    the voices already decoded."""
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "recordings.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"speakers": {}}
    todo = [v for v in voices if v not in {s["language"] for s in meta["speakers"].values()}]
    debs = out / "debs"
    debs.mkdir(exist_ok=True)
    _download([f"asterisk-core-sounds-{v}{suffix}" for v in todo for suffix in ("-g722", "")], debs)
    for voice in todo:
        words = _transcript_lines(next(debs.glob(f"asterisk-core-sounds-{voice}_*.deb")))
        with _deb_files(next(debs.glob(f"asterisk-core-sounds-{voice}-g722_*.deb"))) as tar:
            prompts = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".g722")]
            if not prompts:
                raise UserError(f"the {voice} package holds no .g722 prompts; delete {debs} and fetch again")
            seconds, kept = 0.0, {}
            for m in prompts:   # .../sounds/<speaker>/<relative path>.g722
                parts = Path(m.name).parts
                at = parts.index("sounds")
                speaker, rel = parts[at + 1], Path(*parts[at + 2:]).with_suffix("")
                text = words.get(str(rel), "")
                if rel.parts[0] in _SKIPPED_FOLDERS or text.startswith("["):   # silences and tones
                    continue
                pcm = _decode_g722(tar.extractfile(m).read())
                if len(pcm) < 1600:   # under 0.1 s: an empty prompt
                    continue
                write_flac(out / speaker / rel.with_suffix(".flac"), pcm)
                seconds += len(pcm) / 16_000
                kept[str(rel)] = text
        with atomic_path(out / speaker / "transcripts.tsv") as tmp:
            tmp.write_text("".join(f"{k}\t{v}\n" for k, v in sorted(kept.items())))
        meta["speakers"][speaker] = {"language": voice, "files": len(kept), "minutes": round(seconds / 60, 2)}
        with atomic_path(meta_path) as tmp:   # after each voice: an interrupted fetch keeps what it decoded
            tmp.write_text(json.dumps({**meta, "held_out": [s for s in ASTERISK_HELD_OUT if s in meta["speakers"]]},
                                      indent=1))
    notice = out / "ATTRIBUTION.md"
    if not notice.is_file():
        with atomic_path(notice) as tmp:
            tmp.write_text(ATTRIBUTION)
    return json.loads(meta_path.read_text())


ATTRIBUTION = """# Recordings in this folder

The Asterisk core sounds, as packaged by Debian (asterisk-core-sounds-*-g722 1.6.1-1), decoded to FLAC.
English and Spanish recorded by Allison Smith (theivrvoice.com), French by June Wallack (junewallack.com),
Italian by Carlo, Russian provided by Maxim Topal (ivrvoice.ru); Digium, Inc. and the Asterisk project.
Licences: CC-BY-SA 3.0 (en, es, fr, it), CC-BY 3.0 (ru); see the packages' copyright files in debs/.
Use them as training data with this attribution; do not redistribute them without it.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m daetalker_jax.synth.recordings",
        description="Fetch Debian's Asterisk voice prompts (real recorded speech: en, es, fr, it, ru; ~2 h) into a "
                    "speech folder for `python -m daetalker_jax.synth --speech-dir DIR`.",
        formatter_class=HelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="the speech folder to fill (reruns skip finished voices)")
    p.add_argument("--voices", default=",".join(ASTERISK_VOICES), help="comma-separated language codes")
    args = p.parse_args(argv)
    voices = tuple(v for v in args.voices.split(",") if v)
    unknown = sorted(set(voices) - set(ASTERISK_VOICES))
    if unknown or not voices:
        raise UserError(f"--voices: unknown {', '.join(unknown) or '(none given)'}; choose from "
                        f"{', '.join(ASTERISK_VOICES)}")
    meta = fetch_asterisk(args.out, voices)
    for speaker, info in meta["speakers"].items():
        print(f"{speaker}: {info['files']} recordings, {info['minutes']:.1f} min")
    print(f"speech folder: {args.out} (held out by default: {', '.join(meta['held_out']) or 'none'})")
    return 0


if __name__ == "__main__":
    run_cli(main)
