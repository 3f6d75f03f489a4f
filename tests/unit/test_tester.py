"""The tester's test set per config, and what it measures when promotions come faster than it does."""

from __future__ import annotations

from pathlib import Path

from smart_tuner.actors.tester import DEMO_TEST, ChampionTesterIO, _Job, held_out_set
from smart_tuner.state.config import load_config


def spec_of(tmp_path: Path, text: str) -> tuple[str, ...] | None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    spec = held_out_set(load_config(path).resolved)
    return None if spec is None else spec.args


def test_the_test_set_comes_from_the_config(tmp_path: Path) -> None:
    assert spec_of(tmp_path, "strategy: forks\n") == (DEMO_TEST,)  # the demo's own sentences
    assert spec_of(tmp_path, "trainer: {dataset: /data/lj}\n") is None  # a user's corpus names its own
    assert spec_of(tmp_path, "trainer: {dataset: /data/lj, test_dataset: /data/lj-test}\n") == ("/data/lj-test",)
    held = spec_of(tmp_path, "trainer: {dataset: /data/lj, test_count: 40, val_count: 20, data_dir: /d}\n")
    assert held == ("/data/lj", "--held-out", "20,40,0", "--data-dir", "/d")
    assert spec_of(tmp_path, "trainer: {listening_samples: false}\n") is None
    external = load_config(None).resolved.model_copy(update={"external": object()})  # any external section
    assert held_out_set(external) is None  # no model of ours to ask


def job(segment: str, final: bool = False) -> _Job:
    return _Job(segment, 10, f"/c/{segment}.pt", "ab" * 32, final, None)


def test_only_the_latest_champion_waits_and_the_final_measurement_is_never_displaced(tmp_path: Path) -> None:
    io = ChampionTesterIO(client=None, run_dir=tmp_path, spec=None)  # type: ignore[arg-type]
    io.submit(job("a"))
    io.submit(job("b"))
    assert io.waiting == job("b")  # "a" was replaced before it was measured
    io.submit(job("b", final=True))
    io.submit(job("c"))  # a promotion that arrived late cannot push the end-of-run measurement out
    assert io.waiting == job("b", final=True)
