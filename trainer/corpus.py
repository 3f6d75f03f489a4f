"""The bundled demo corpus: English sentences synthesised by espeak-ng, in the LJSpeech layout.

``ensure_demo_corpus()`` returns a ready corpus directory, building it at first use
from PyPI packages alone (the ``espeakng-loader`` wheel ships ``libespeak-ng`` and
its voices; we drive it through ctypes). ``python -m smart_tuner.trainer.corpus
--out DIR`` regenerates one and prints what it made.

One voice at one rate, short sentences from templates and a fixed vocabulary: a
task a small Tacotron2 learns in minutes on a CPU. espeak-ng carries state from
one utterance to the next (the same text comes out slightly differently the
second time in a process), so every build synthesises in a fresh interpreter
and the same parameters always give the same audio.

Imports the standard library, numpy and ``.text`` only (no torch: the build
process stays light).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .fileio import sha256_file
from .text import normalize

GENERATOR = "smart_tuner.trainer.corpus"
GENERATOR_VERSION = 1  # bump when sentences, synthesis or post-processing change
DEFAULT_DIRNAME = "demo-corpus-v1"
VOICE = "en-us"
RATE_WPM = 160
SAMPLING_RATE = 22050
PAD_S = 0.05
TRIM_DB = 40.0  # frames this far below the loudest one count as silence
_BUILD_TIMEOUT_S = 1800.0  # 300 utterances take seconds; this only catches a hung synthesiser

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # without it a missing data directory calls exit() in the library
_ESPEAK_RATE = 1
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class CorpusError(RuntimeError):
    """The corpus cannot be built or the target directory is not ours to replace."""


class _Espeak:
    """libespeak-ng, initialised; ``synthesize(text)`` -> int16 samples. One per build process:
    the library is a process-wide singleton, neither thread-safe nor reset between texts."""

    def __init__(self, voice: str = VOICE, rate_wpm: int = RATE_WPM) -> None:
        import espeakng_loader  # type: ignore[import-untyped]  # the wheel ships no type hints

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint]
        lib.espeak_Synth.argtypes += [ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        data_path = espeakng_loader.get_data_path()
        rate = int(lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT))
        if rate != SAMPLING_RATE:
            raise CorpusError(f"espeak_Initialize({data_path}) returned {rate}, expected a rate of {SAMPLING_RATE} Hz")
        self.version = (lib.espeak_Info(None) or b"unknown").decode()
        self._chunks: list[bytes] = []
        # ctypes frees a callback whose Python object dies; keep it for the library's lifetime.
        self._callback = _SYNTH_CALLBACK(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        if (err := lib.espeak_SetVoiceByName(voice.encode())) != 0:
            raise CorpusError(f"espeak-ng voice {voice!r} not found under {data_path} (error {err})")
        lib.espeak_SetParameter(_ESPEAK_RATE, rate_wpm, 0)
        self._lib = lib

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], n_samples: int, events: int | None) -> int:
        if n_samples > 0 and wav:
            self._chunks.append(ctypes.string_at(wav, n_samples * 2))
        return 0  # 0 = continue, 1 = abort

    def synthesize(self, text: str) -> npt.NDArray[np.int16]:
        encoded = text.encode() + b"\0"
        self._chunks = []
        err = self._lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        chunks, self._chunks = self._chunks, []
        if err != 0 or not chunks:
            raise CorpusError(f"espeak_Synth failed for {text!r} (error {err}, {len(chunks)} audio chunks)")
        return np.frombuffer(b"".join(chunks), dtype="<i2").copy()


# --- sentences ---------------------------------------------------------------------------

# Varied spellings (knight, phone, laugh, quiet, yacht...) so the model must learn letter to sound.
_VOCAB: dict[str, list[str]] = {
    key: words.split()
    for key, words in {
        "name": "Anna Ben Clara David Emma Frank Grace Henry Iris Jack Kate Leo Maria Nick Olivia Peter "
        "Quinn Rosa Sam Tina Victor Wendy Yusuf Zoe",
        "title": "Mr. Mrs. Dr.",
        "adj": "old young bright dark quiet noisy heavy light warm cold tiny huge yellow purple green "
        "golden lazy clever brave gentle rough smooth strange famous hungry sleepy shiny wooden frozen",
        "noun": "cat dog fox horse bird fish knight queen wizard farmer doctor sailor baker box lamp "
        "phone clock chair table window garden bridge river mountain yacht zebra jacket wheel basket "
        "kettle pencil ladder bottle violin whistle tiger rabbit penguin",
        "verb": "found painted carried fixed watched pushed opened cleaned bought lifted dropped chased "
        "counted washed kicked caught brought borrowed showed wrapped juggled squeezed visited "
        "weighed photographed measured",
        "iverb": "slept laughed waited jumped smiled shouted arrived vanished danced sneezed",
        "prep": "in on near under behind beside over through",
        "place": "market kitchen station village forest harbour library castle meadow school valley theatre",
        "adverb": "quickly slowly carefully quietly happily suddenly proudly gently",
        "time": "morning evening night afternoon winter summer",
    }.items()
}

_TEMPLATES = [
    "the {adj} {noun} {verb} the {noun}.",
    "{name} {verb} {num} {adj} {nouns} {prep} the {place}.",
    "did {name} see the {adj} {noun} {prep} the {place}?",
    "{title} {name} has {num} {nouns}, and {name} has {num}.",
    "why is the {noun} so {adj} this {time}?",
    "on the {ord} day, we {verb} the {adj} {noun}.",
    "the {noun} was {dec} meters long, {name} said.",
    "please put the {noun} {prep} the {adj} {place}.",
    "{name} {adverb} {verb} the {noun} at {small} o'clock.",
    "the {adj} {noun} costs {money} at the {place}.",
    "can you hear the {nouns} {prep} the {place}?",
    "it's {adj}, but the {noun} {iverb} {adverb}.",
    "{name} and {name} {verb} {num} {adj} {nouns}.",
    "where did the {adj} {nouns} go this {time}?",
    "{title} {name} {iverb} {prep} the {place} in the {time}.",
    "every {time}, the {noun} {iverb}.",
]
_TINY_TEMPLATES = [
    "{adj} {nouns}.",
    "the {noun} {iverb}.",
    "{name} {iverb}?",
    "{small} {nouns}.",
    "the {adj} {noun}.",
    "{name} {verb} {name}.",
    "{adverb}, {name}!",
]
_SLOT_RE = re.compile(r"\{(\w+)\}")


def _plural(noun: str) -> str:
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _fill(slot: str, rng: random.Random) -> str:
    """One random word or number; numbers stay digits in the raw text and ``normalize`` spells them."""
    if slot == "num":
        return str(
            rng.choice([rng.randint(2, 20), rng.randint(21, 99), rng.randint(100, 999), rng.randint(1000, 2500)])
        )
    if slot == "small":
        return str(rng.randint(2, 12))
    if slot == "ord":
        n = rng.randint(1, 31)
        return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
    if slot == "dec":
        return f"{rng.randint(1, 20)}.{rng.randint(1, 9)}"
    if slot == "money":
        return f"${rng.randint(2, 60)}"
    if slot == "nouns":
        return _plural(rng.choice(_VOCAB["noun"]))
    return rng.choice(_VOCAB[slot])


def make_sentences(n: int, seed: int, tiny: bool = False) -> list[str]:
    """``n`` distinct raw sentences; 4-12 words once normalised (2-4 when ``tiny``)."""
    rng = random.Random(seed)
    templates, (min_words, max_words) = (_TINY_TEMPLATES, (2, 4)) if tiny else (_TEMPLATES, (4, 12))
    sentences: list[str] = []
    seen: set[str] = set()
    for _ in range(n * 100):  # far more draws than distinct sentences exist for any sane n
        if len(sentences) == n:
            return sentences
        raw = _SLOT_RE.sub(lambda m: _fill(m.group(1), rng), rng.choice(templates))
        raw = raw[0].upper() + raw[1:]
        if raw not in seen and min_words <= len(normalize(raw).split()) <= max_words:
            seen.add(raw)
            sentences.append(raw)
    if len(sentences) < n:
        raise CorpusError(f"only {len(sentences)} distinct sentences could be drawn, {n} were asked for")
    return sentences


# --- audio -------------------------------------------------------------------------------


def trim_silence(samples: npt.NDArray[np.int16], frame: int = 256) -> npt.NDArray[np.int16]:
    """Cut leading/trailing frames more than TRIM_DB below the loudest, then pad PAD_S of silence."""
    n_frames = max(1, len(samples) // frame)
    frames = samples[: n_frames * frame].astype(np.float64).reshape(n_frames, -1)
    rms = np.sqrt((frames**2).mean(axis=1))
    loud = np.nonzero(rms > rms.max() * 10 ** (-TRIM_DB / 20))[0]
    core = samples[loud[0] * frame : (loud[-1] + 1) * frame] if len(loud) else samples[:0]
    pad = np.zeros(round(PAD_S * SAMPLING_RATE), dtype=np.int16)
    return np.concatenate([pad, core, pad])


def _write_wav(path: Path, samples: npt.NDArray[np.int16]) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLING_RATE)
        wav.writeframes(samples.astype("<i2").tobytes())


# --- building ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CorpusSpec:
    kind: str  # "demo" or "tiny" (sentences from the templates), or "prose" (the sentences given)
    n_utterances: int
    seed: int
    voice: str = VOICE
    rate_wpm: int = RATE_WPM
    sampling_rate: int = SAMPLING_RATE
    pad_s: float = PAD_S
    sentences: tuple[str, ...] | None = None  # "prose": the raw sentences, in order


def _params(spec: CorpusSpec) -> dict[str, object]:
    """The spec as the manifest records it: prose sentences by their hash; none for the templated kinds
    (so a demo corpus built before prose existed is still current)."""
    params = asdict(spec)
    sentences = params.pop("sentences")
    if sentences is not None:
        params["sentences_sha256"] = hashlib.sha256("\n".join(sentences).encode()).hexdigest()
    return params


def _sentences(spec: CorpusSpec) -> list[str]:
    if spec.kind == "prose":
        if not spec.sentences or len(spec.sentences) < spec.n_utterances:
            raise CorpusError(f"a prose corpus of {spec.n_utterances} utterances needs as many sentences")
        return list(spec.sentences[: spec.n_utterances])
    return make_sentences(spec.n_utterances, spec.seed, tiny=spec.kind == "tiny")


def _build_into(out: Path, spec: CorpusSpec) -> None:
    """Write wavs, metadata, provenance and manifest under ``out``; runs in a fresh process."""
    engine = _Espeak(spec.voice, spec.rate_wpm)
    (out / "wavs").mkdir(parents=True)
    lines, audio_hash, n_samples = [], hashlib.sha256(), 0
    for i, raw in enumerate(_sentences(spec)):
        utt_id = f"{spec.kind}_{i:04d}"
        text = normalize(raw)
        samples = trim_silence(engine.synthesize(text))
        _write_wav(out / "wavs" / f"{utt_id}.wav", samples)
        audio_hash.update(samples.tobytes())
        n_samples += len(samples)
        lines.append(f"{utt_id}|{raw}|{text}\n")
    (out / "metadata.csv").write_text("".join(lines), encoding="utf-8")
    manifest: dict[str, object] = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "params": _params(spec),
        "espeak_ng_version": engine.version,
        "metadata_sha256": sha256_file(out / "metadata.csv"),
        "audio_sha256": audio_hash.hexdigest(),
        "n_utterances": len(lines),
        "audio_seconds": round(n_samples / SAMPLING_RATE, 3),
    }
    (out / "PROVENANCE.txt").write_text(_provenance(spec, engine.version), encoding="utf-8")
    # The manifest comes last: its presence says the rest is complete.
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _provenance(spec: CorpusSpec, version: str) -> str:
    return (
        f"Generator: {GENERATOR} version {GENERATOR_VERSION} "
        f"(python -m {GENERATOR} --out DIR --n {spec.n_utterances} --seed {spec.seed}"
        f"{' --tiny' if spec.kind == 'tiny' else ''})\n"
        f"Synthesiser: espeak-ng {version} from the espeakng-loader wheel, voice {spec.voice}, "
        f"{spec.rate_wpm} words per minute, {spec.sampling_rate} Hz 16-bit mono\n"
        + (
            f"Sentences: {spec.n_utterances} given (listed in metadata.csv); "
            if spec.kind == "prose"
            else f"Sentences: {spec.n_utterances} drawn with random.Random({spec.seed}) from the templates and "
            "vocabulary in the generator; "
        )
        + "leading/trailing silence trimmed, "
        f"{int(spec.pad_s * 1000)} ms of silence added at each end\n"
        "Licence: espeak-ng is GPL-3.0-or-later; it is only run, not distributed, here. The audio is "
        + ("produced by our script from the sentences given.\n" if spec.kind == "prose" else "")
        + ("" if spec.kind == "prose" else "produced by our script from our own sentences.\n")
    )


def _read_manifest(root: Path) -> dict[str, object] | None:
    with contextlib.suppress(OSError, ValueError):
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        if isinstance(manifest, dict):
            return manifest
    return None


def _is_current(root: Path, spec: CorpusSpec) -> bool:
    manifest = _read_manifest(root)
    if manifest is None or manifest.get("generator_version") != GENERATOR_VERSION:
        return False
    if manifest.get("params") != _params(spec) or not (root / "metadata.csv").is_file():
        return False
    if manifest.get("metadata_sha256") != sha256_file(root / "metadata.csv"):
        return False
    ids = [line.split("|", 1)[0] for line in (root / "metadata.csv").read_text(encoding="utf-8").splitlines()]
    return all((root / "wavs" / f"{utt_id}.wav").is_file() for utt_id in ids)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An exclusive flock beside ``root``: one builder at a time, the others wait and reuse."""
    with open(root.parent / f".{root.name}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _replace(tmp: Path, root: Path, spec: CorpusSpec) -> None:
    """Move the finished build into place; an older corpus of ours is swapped out first."""
    if root.exists():
        manifest = _read_manifest(root)
        if (manifest is None or manifest.get("generator") != GENERATOR) and any(root.iterdir()):
            raise CorpusError(f"{root} exists and is not a corpus made by {GENERATOR}; refusing to replace it")
        old = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.old-"))
        os.rename(root, old / "corpus")
        shutil.rmtree(old)
    try:
        os.rename(tmp, root)
    except OSError:
        # A process that does not take our lock got there first: theirs will do if it is the same corpus.
        if not _is_current(root, spec):
            raise


def _synthesise_in_child(out: Path, spec: CorpusSpec) -> None:
    """Run ``_build_into`` in a fresh interpreter.

    Fresh, because espeak-ng's output depends on everything it said before in the
    process; an interpreter rather than a multiprocessing child, because spawn would
    re-import the caller's ``__main__`` and fork would copy its threads.
    """
    cmd = [sys.executable, "-m", GENERATOR, "--build-into", str(out), "--n", str(spec.n_utterances)]
    cmd += ["--seed", str(spec.seed), *(["--tiny"] if spec.kind == "tiny" else [])]
    if spec.kind == "prose":
        listing = out.parent / "sentences.txt"
        listing.write_text("".join(f"{line}\n" for line in spec.sentences or ()), encoding="utf-8")
        cmd += ["--sentences", str(listing), "--voice", spec.voice, "--rate", str(spec.rate_wpm)]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["(no error output)"]
        raise CorpusError(f"building the corpus in {out} failed (exit {result.returncode}): {tail[0]}")


def _build(root: Path, spec: CorpusSpec, force: bool = False) -> Path:
    root = Path(root).expanduser().absolute()
    if not force and _is_current(root, spec):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        if not force and _is_current(root, spec):  # built while we waited for the lock
            return root
        tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.build-"))
        try:
            _synthesise_in_child(tmp / "corpus", spec)
            _replace(tmp / "corpus", root, spec)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def default_root() -> Path:
    """``$SMART_TUNER_DATA/demo-corpus-v1``, else ``~/.cache/smart_tuner/demo-corpus-v1``."""
    base = os.environ.get("SMART_TUNER_DATA")
    return (Path(base) if base else Path.home() / ".cache" / "smart_tuner") / DEFAULT_DIRNAME


def ensure_demo_corpus(root: Path | None = None, n_utterances: int = 300, seed: int = 0) -> Path:
    """The demo corpus directory (LJSpeech layout), built on first use; a no-op once it is current."""
    return _build(root if root is not None else default_root(), CorpusSpec("demo", n_utterances, seed))


DEMO_TEST_DIRNAME = "demo-test-v1"
DEMO_TEST_SEED = 1000  # the demo corpus draws with seed 0; its test sentences with another


def demo_test_sentences(n: int = 16, corpus_utterances: int = 300) -> list[str]:
    """``n`` sentences from the demo's templates that the demo corpus does not contain."""
    seen = {normalize(s) for s in make_sentences(corpus_utterances, 0)}
    fresh = [s for s in make_sentences(4 * n, DEMO_TEST_SEED) if normalize(s) not in seen]
    if len(fresh) < n:
        raise CorpusError(f"only {len(fresh)} demo test sentences are new to the corpus, {n} asked for")
    return fresh[:n]


def ensure_demo_test_set(root: Path | None = None, n: int = 16) -> Path:
    """The demo run's test set: ``n`` new sentences in the demo's voice, which no training or
    selection step sees (the end-of-run listening samples and test metrics are measured on it)."""
    where = root if root is not None else default_root().parent / DEMO_TEST_DIRNAME
    return make_prose_corpus(where, demo_test_sentences(n), VOICE, RATE_WPM)


def make_tiny_corpus(root: Path, n_utterances: int = 12, seed: int = 0) -> Path:
    """A corpus of 2-4 word sentences for fast tests; same generator, same idempotence."""
    return _build(root, CorpusSpec("tiny", n_utterances, seed))


def make_prose_corpus(root: Path, sentences: Sequence[str], voice: str, rate_wpm: int) -> Path:
    """A corpus of the given raw sentences, said by another espeak-ng voice at another rate."""
    if any("\n" in line or not line.strip() for line in sentences):
        raise CorpusError("prose sentences must be non-empty single lines")
    return _build(root, CorpusSpec("prose", len(sentences), 0, voice, rate_wpm, sentences=tuple(sentences)))


def corpus_summary(root: Path) -> dict[str, float]:
    """Utterance count, audio minutes and wav megabytes of a built corpus, measured on its files."""
    wavs = sorted((root / "wavs").glob("*.wav"))
    frames = 0
    for path in wavs:
        with wave.open(str(path), "rb") as wav:
            frames += wav.getnframes()
    size = sum(path.stat().st_size for path in wavs)
    return {"utterances": len(wavs), "audio_minutes": frames / SAMPLING_RATE / 60, "wav_megabytes": size / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {GENERATOR}", description="Regenerate the demo corpus.")
    parser.add_argument("--out", type=Path, default=None, help=f"target directory (default {default_root()})")
    parser.add_argument("--n", type=int, default=None, help="number of utterances (default 300, tiny 12)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="2-4 word sentences, for tests")
    parser.add_argument("--build-into", type=Path, default=None, help=argparse.SUPPRESS)  # the build child
    parser.add_argument("--sentences", type=Path, default=None, help="say these lines instead (one per line)")
    parser.add_argument("--voice", default=VOICE, help=f"espeak-ng voice (default {VOICE})")
    parser.add_argument("--rate", type=int, default=RATE_WPM, help=f"words per minute (default {RATE_WPM})")
    args = parser.parse_args(argv)
    sentences = None
    if args.sentences is not None:
        try:
            sentences = tuple(line for line in args.sentences.read_text(encoding="utf-8").splitlines() if line.strip())
        except (OSError, UnicodeDecodeError) as exc:
            parser.error(f"--sentences {args.sentences}: cannot read it ({exc})")
    n = args.n if args.n is not None else (len(sentences) if sentences else 12 if args.tiny else 300)
    if n < 1:
        parser.error(f"--n must be at least 1, got {n}")
    kind = "prose" if sentences else "tiny" if args.tiny else "demo"
    spec = CorpusSpec(kind, n, args.seed, args.voice, args.rate, sentences=sentences)
    if args.build_into is not None:
        _build_into(args.build_into, spec)
        return 0
    start = time.monotonic()
    root = _build(args.out or default_root(), spec, force=True)
    elapsed_s = time.monotonic() - start
    s = corpus_summary(root)
    print(
        f"{root}: {s['utterances']:.0f} utterances, {s['audio_minutes']:.2f} min of audio, "
        f"{s['wav_megabytes']:.1f} MB of wavs, built in {elapsed_s:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
