"""The demo corpus, synthesised for real by the espeak-ng from the espeakng-loader wheel."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from smart_tuner.trainer import corpus
from smart_tuner.trainer.audio import read_wav
from smart_tuner.trainer.data import load_ljspeech
from smart_tuner.trainer.text import normalize

PAD_SAMPLES = round(corpus.PAD_S * corpus.SAMPLING_RATE)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return corpus.make_tiny_corpus(tmp_path_factory.mktemp("corpus") / "tiny")


def test_tiny_corpus_wavs_are_speech_at_22050_hz(tiny: Path) -> None:
    wavs = sorted((tiny / "wavs").glob("*.wav"))
    assert len(wavs) == 12
    for path in wavs:
        with wave.open(str(path)) as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (22050, 1, 2)
        audio, _ = read_wav(path)
        assert np.abs(audio).max() > 0.1, path  # not silent
        # Trimmed, then padded with 50 ms of digital silence at both ends.
        assert not audio[:PAD_SAMPLES].any() and not audio[-PAD_SAMPLES:].any()
        assert np.abs(audio[PAD_SAMPLES : PAD_SAMPLES + 2048]).max() > 0.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return corpus.ensure_demo_corpus(tmp_path_factory.mktemp("corpus") / "demo", n_utterances=24, seed=1)


def _lengths_and_seconds(root: Path) -> tuple[np.ndarray, np.ndarray]:
    utts = load_ljspeech(root)
    lengths = np.array([len(u.text) for u in utts])
    return lengths, np.array([len(read_wav(u.wav_path)[0]) / 22050 for u in utts])


def test_duration_grows_with_text_length(tiny: Path, demo: Path) -> None:
    tiny_chars, tiny_s = _lengths_and_seconds(tiny)
    demo_chars, demo_s = _lengths_and_seconds(demo)
    assert tiny_s.min() > 0.4 and tiny_s.max() < demo_s.max() < 8.0
    assert np.corrcoef(demo_chars, demo_s)[0, 1] > 0.7
    assert np.corrcoef(np.r_[tiny_chars, demo_chars], np.r_[tiny_s, demo_s])[0, 1] > 0.8


def test_metadata_parses_and_records_provenance(tiny: Path) -> None:
    utts = load_ljspeech(tiny)
    rows = [line.split("|") for line in (tiny / "metadata.csv").read_text().splitlines()]
    assert [u.id for u in utts] == [r[0] for r in rows] == [f"tiny_{i:04d}" for i in range(12)]
    assert all(len(r) == 3 and r[2] == normalize(r[1]) == u.text for r, u in zip(rows, utts, strict=True))
    assert all(2 <= len(u.text.split()) <= 4 for u in utts)
    manifest = json.loads((tiny / "manifest.json").read_text())
    assert manifest["params"]["kind"] == "tiny" and manifest["n_utterances"] == 12
    provenance = (tiny / "PROVENANCE.txt").read_text()
    assert f"espeak-ng {manifest['espeak_ng_version']}" in provenance and "GPL-3.0" in provenance
    assert manifest["espeak_ng_version"][0].isdigit()


def test_second_call_is_a_no_op(tiny: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in tiny.rglob("*")}
    inode = tiny.stat().st_ino
    assert corpus.make_tiny_corpus(tiny) == tiny
    assert tiny.stat().st_ino == inode and {p: p.stat().st_mtime_ns for p in tiny.rglob("*")} == before


def test_same_parameters_give_the_same_audio(tiny: Path, tmp_path: Path) -> None:
    # espeak-ng output depends on what it said before in the process; builds run in a fresh one.
    again = corpus.make_tiny_corpus(tmp_path / "again")
    for name in ("metadata.csv", "wavs/tiny_0000.wav", "wavs/tiny_0011.wav"):
        assert (again / name).read_bytes() == (tiny / name).read_bytes(), name


def test_changed_parameters_or_damage_rebuild(tmp_path: Path) -> None:
    root = corpus.make_tiny_corpus(tmp_path / "c", n_utterances=3)
    assert len(load_ljspeech(root)) == 3
    assert len(load_ljspeech(corpus.make_tiny_corpus(root, n_utterances=4))) == 4
    (root / "wavs" / "tiny_0002.wav").unlink()
    corpus.make_tiny_corpus(root, n_utterances=4)
    assert (root / "wavs" / "tiny_0002.wav").is_file()
    assert not [p for p in tmp_path.iterdir() if ".build-" in p.name or ".old-" in p.name]


def test_refuses_to_replace_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    with pytest.raises(corpus.CorpusError, match="is not a corpus made by"):
        corpus.make_tiny_corpus(tmp_path / "mine", n_utterances=2)
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "precious"


def test_two_processes_ensuring_at_once_both_succeed(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    code = (
        "import sys; from pathlib import Path\n"
        "from smart_tuner.trainer.corpus import ensure_demo_corpus\n"
        "print(ensure_demo_corpus(Path(sys.argv[1]), n_utterances=20, seed=3))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    results = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err.decode() for _, err in results]
    assert {out.decode().strip() for out, _ in results} == {str(root)}
    utts = load_ljspeech(root)
    assert len(utts) == 20 and all(4 <= len(u.text.split()) <= 12 for u in utts)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".demo.lock", "demo"]


def test_default_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SMART_TUNER_DATA", str(tmp_path))
    assert corpus.default_root() == tmp_path / "demo-corpus-v1"
    monkeypatch.delenv("SMART_TUNER_DATA")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert corpus.default_root() == tmp_path / ".cache" / "smart_tuner" / "demo-corpus-v1"


def test_sentences_are_distinct_and_within_the_word_limits() -> None:
    sentences = corpus.make_sentences(300, seed=0)
    assert len(set(sentences)) == 300 and sentences == corpus.make_sentences(300, seed=0)
    words = [len(normalize(s).split()) for s in sentences]
    assert min(words) >= 4 and max(words) <= 12
    assert any(ch.isdigit() for s in sentences for ch in s) and any(s.endswith("?") for s in sentences)
    assert set("abcdefghijklmnopqrstuvwxyz") <= set("".join(normalize(s) for s in sentences))


def test_cli_regenerates_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "smart_tuner.trainer.corpus", "--out", str(out), "--tiny", "--n", "3", "--seed", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"{out}: 3 utterances" in result.stdout and "min of audio" in result.stdout
    assert len(load_ljspeech(out)) == 3


def test_a_failed_build_reports_the_child_error(tmp_path: Path) -> None:
    (tmp_path / "taken" / "wavs").mkdir(parents=True)  # the child refuses to build over an existing wavs/
    with pytest.raises(corpus.CorpusError, match=r"taken failed \(exit 1\): FileExistsError"):
        corpus._synthesise_in_child(tmp_path / "taken", corpus.CorpusSpec("tiny", 2, 0))


def test_a_prose_corpus_says_the_given_sentences_in_another_voice(tmp_path: Path) -> None:
    sentences = ["Return a list of the most frequent values.", "The line passed is the physical line."]
    other = corpus.make_prose_corpus(tmp_path / "prose", sentences, "en-gb-x-rp+f3", 190)
    demo_voice = corpus.make_prose_corpus(tmp_path / "prose-us", sentences, corpus.VOICE, corpus.RATE_WPM)
    utterances = load_ljspeech(other)
    assert [u.text for u in utterances] == [normalize(s) for s in sentences]
    manifest = json.loads((other / "manifest.json").read_text())
    assert manifest["params"]["voice"] == "en-gb-x-rp+f3" and manifest["params"]["rate_wpm"] == 190
    assert len(manifest["params"]["sentences_sha256"]) == 64 and "sentences" not in manifest["params"]
    assert "given (listed in metadata.csv)" in (other / "PROVENANCE.txt").read_text()
    a, _ = read_wav(other / "wavs" / "prose_0000.wav")
    b, _ = read_wav(demo_voice / "wavs" / "prose_0000.wav")
    assert len(a) != len(b)  # another voice at another rate: not the same audio
    assert corpus.make_prose_corpus(tmp_path / "prose", sentences, "en-gb-x-rp+f3", 190) == other  # current: kept
    with pytest.raises(corpus.CorpusError, match="not found"):
        corpus.make_prose_corpus(tmp_path / "bad", sentences, "no-such-voice", 160)
