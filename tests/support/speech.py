"""Real synthesized speech for voice tests: espeak-ng to WAV, and WAV to LiveKit audio frames.

espeak-ng is a system package (Debian: espeak-ng; scripts/setup.sh installs it when it runs as
root with apt-get). Without it the tests that call :func:`synthesize_speech` are skipped, and
fail with the reason under CI=true, like the Go-built tools (tests/support/processes.py).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from livekit import rtc

from tests.support.processes import IN_CI

ESPEAK_NG = "espeak-ng"
Samples = npt.NDArray[np.int16]


def espeak_ng_path() -> str:
    """The espeak-ng binary; skips the test when missing, fails it under CI=true."""
    found = shutil.which(ESPEAK_NG)
    if found:
        return found
    reason = (
        "espeak-ng is not installed: the voice tests synthesize their speech with it"
        " (run scripts/setup.sh as root, or apt-get install espeak-ng)"
    )
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def read_wav(path: Path) -> tuple[Samples, int]:
    """The samples (mono int16; channels averaged) and sample rate of a 16-bit PCM WAV file."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * wav.getsampwidth()}-bit samples, expected 16-bit")
        channels, rate = wav.getnchannels(), wav.getframerate()
        data = wav.readframes(wav.getnframes())
    samples = np.frombuffer(data, dtype="<i2")
    if channels > 1:
        usable = len(samples) - len(samples) % channels
        mixed = samples[:usable].reshape(-1, channels).astype(np.int32).mean(axis=1)
        samples = mixed.astype(np.int16)
    return samples.astype(np.int16), rate


def write_wav(path: Path, samples: Samples, sample_rate: int) -> Path:
    """Mono 16-bit PCM WAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return path


def resample(samples: Samples, input_rate: int, output_rate: int) -> Samples:
    """Mono int16 samples at another rate, with LiveKit's (libsoxr) high-quality resampler."""
    if input_rate == output_rate or len(samples) == 0:
        return samples
    resampler = rtc.AudioResampler(
        input_rate, output_rate, num_channels=1, quality=rtc.AudioResamplerQuality.HIGH
    )
    frame = rtc.AudioFrame(
        data=samples.astype("<i2").tobytes(),
        sample_rate=input_rate,
        num_channels=1,
        samples_per_channel=len(samples),
    )
    out = [*resampler.push(frame), *resampler.flush()]
    if not out:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out]).astype(np.int16)


def synthesize_speech(
    text: str,
    path: Path,
    sample_rate: int = 48000,
    *,
    voice: str = "en-us",
    words_per_minute: int = 160,
    leading_silence_s: float = 0.0,
    trailing_silence_s: float = 0.0,
) -> Path:
    """Speak ``text`` with espeak-ng into ``path``: a mono 16-bit WAV at ``sample_rate``.

    espeak-ng writes 22050 Hz; other rates are resampled. Silence can be added before and
    after (espeak-ng itself leaves only a few milliseconds at either end).
    """
    binary = espeak_ng_path()
    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
        raw = Path(tmp) / "raw.wav"
        result = subprocess.run(
            [binary, "-v", voice, "-s", str(words_per_minute), "-w", str(raw), "--", text],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0 or not raw.is_file():
            raise RuntimeError(f"espeak-ng failed ({result.returncode}): {result.stderr.strip()}")
        samples, rate = read_wav(raw)
    samples = resample(samples, rate, sample_rate)
    lead = np.zeros(round(leading_silence_s * sample_rate), dtype=np.int16)
    trail = np.zeros(round(trailing_silence_s * sample_rate), dtype=np.int16)
    return write_wav(path, np.concatenate([lead, samples, trail]), sample_rate)


def samples_to_frames(
    samples: Samples, sample_rate: int, frame_ms: int = 10
) -> list[rtc.AudioFrame]:
    """Mono int16 samples cut into frames of ``frame_ms`` (the last one zero-padded)."""
    per_frame = sample_rate * frame_ms // 1000
    if per_frame <= 0 or sample_rate * frame_ms % 1000:
        raise ValueError(f"{frame_ms} ms is not a whole number of samples at {sample_rate} Hz")
    padded = np.zeros(-(-len(samples) // per_frame) * per_frame, dtype="<i2")
    padded[: len(samples)] = samples
    return [
        rtc.AudioFrame(
            data=padded[start : start + per_frame].tobytes(),
            sample_rate=sample_rate,
            num_channels=1,
            samples_per_channel=per_frame,
        )
        for start in range(0, len(padded), per_frame)
    ]


def silence_frames(
    duration_s: float, sample_rate: int = 48000, frame_ms: int = 10
) -> list[rtc.AudioFrame]:
    """Frames of digital silence lasting ``duration_s`` (rounded up to whole frames)."""
    return samples_to_frames(
        np.zeros(round(duration_s * sample_rate), dtype=np.int16), sample_rate, frame_ms
    )


def wav_frames(
    path: Path,
    sample_rate: int = 48000,
    frame_ms: int = 10,
    *,
    trailing_silence_s: float = 0.0,
) -> list[rtc.AudioFrame]:
    """A mono 16-bit WAV as ``frame_ms`` frames at ``sample_rate`` (resampled if needed),
    ready for ``rtc.AudioSource.capture_frame`` (an AudioSource of the same rate, 1 channel).

    ``trailing_silence_s`` appends silence: a voice agent's VAD needs some (silero: about
    0.55 s by default) to decide that the user stopped speaking.
    """
    samples, rate = read_wav(path)
    samples = resample(samples, rate, sample_rate)
    trail = np.zeros(round(trailing_silence_s * sample_rate), dtype=np.int16)
    return samples_to_frames(np.concatenate([samples, trail]), sample_rate, frame_ms)


def speech_frames(
    text: str,
    workdir: Path,
    sample_rate: int = 48000,
    frame_ms: int = 10,
    *,
    trailing_silence_s: float = 1.0,
) -> list[rtc.AudioFrame]:
    """``text`` spoken by espeak-ng as frames, followed by ``trailing_silence_s`` of silence."""
    stem = "".join(c if c.isalnum() else "_" for c in text.lower())[:40] or "speech"
    path = synthesize_speech(text, workdir / f"{stem}-{sample_rate}.wav", sample_rate)
    return wav_frames(path, sample_rate, frame_ms, trailing_silence_s=trailing_silence_s)


def frames_duration_s(frames: list[rtc.AudioFrame]) -> float:
    return sum(f.samples_per_channel / f.sample_rate for f in frames)
