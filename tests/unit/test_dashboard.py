"""The dashboard's views, its access rules and its /metrics, on a recorded run and on made-up state."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from smart_tuner.actors.dashboard import views
from smart_tuner.actors.dashboard.metrics import render_metrics
from smart_tuner.actors.dashboard.security import Access
from smart_tuner.state import history
from smart_tuner.state.journal import FileJournal
from smart_tuner.state.model import TunerState

RUN = Path(__file__).resolve().parents[1] / "fixtures" / "old_runs" / "quick-finished"


@pytest.fixture(scope="module")
def state() -> TunerState:
    journal = FileJournal.open_readonly(RUN / "events.log")
    try:
        return history.load(journal)
    finally:
        journal.close()


def test_the_lineage_has_every_segment_and_an_edge_to_each_from_the_checkpoint_it_started_from(
    state: TunerState,
) -> None:
    tree = views.lineage(state)
    segments = state.tuning.segments
    assert {n["id"] for n in tree["nodes"]} == set(segments)
    made = {s.checkpoint: sid for sid, s in segments.items() if s.checkpoint}
    expected = {(made[s.from_checkpoint], sid) for sid, s in segments.items() if s.from_checkpoint in made}
    assert {(e["from"], e["to"]) for e in tree["edges"]} == expected and expected
    for e in tree["edges"]:  # the label is the change between the two segments' hyperparameters
        before, after = segments[e["from"]].hparams, segments[e["to"]].hparams
        assert e["change"] == {k: v for k, v in after.items() if before.get(k) != v}
        assert (e["label"] == "trains on") == (not e["change"])
    assert {e["kind"] for e in tree["edges"]} >= {"fork", "trains-on"}
    path = tree["champion_path"]
    assert path[-1] == state.tuning.champion.segment_id and segments[path[0]].from_checkpoint is None
    assert all(segments[b].from_checkpoint == segments[a].checkpoint for a, b in itertools.pairwise(path))
    assert [n["id"] for n in tree["nodes"] if n["champion_path"]] == sorted(
        path, key=lambda s: segments[s].scheduled_seq
    )


def test_the_schedule_replays_into_the_champions_hyperparameters(state: TunerState) -> None:
    plan = views.schedule(state)
    current = dict(plan["initial"])
    steps = [c["at_step"] for c in plan["changes"]]
    assert steps == sorted(steps)
    for c in plan["changes"]:
        assert c["set"] and all(current.get(k) != v for k, v in c["set"].items())
        current.update(c["set"])
    champion = state.tuning.segments[plan["champion"]]
    assert current == {**champion.hparams, **champion.applied}
    for name, pieces in plan["functions"].items():  # step functions: contiguous, from the start to the end
        assert pieces[0]["from_step"] == 0 and pieces[-1]["to_step"] == plan["final_step"], name
        assert all(a["to_step"] == b["from_step"] and a["value"] != b["value"] for a, b in itertools.pairwise(pieces))


def test_trials_csv_has_a_row_per_trial_and_a_column_per_hyperparameter(state: TunerState) -> None:
    lines = views.trials_csv(state).splitlines()
    head = lines[0].split(",")
    assert head[:5] == ["trial_id", "number", "sampler", "status", "value"] and "learning_rate" in head
    assert len(lines) == 1 + len(state.tuning.trials)


def test_overview_counts_the_budget_and_an_eta_only_while_running(state: TunerState) -> None:
    o = views.overview(state, now=0.0)
    assert o["steps_spent"] > 0 and o["champion"]["segment_id"] == state.tuning.champion.segment_id
    assert o["status"] is not None and o["eta_s"] is None  # a finished run has no ETA
    json.dumps(o, allow_nan=False)  # nothing a browser's JSON.parse would refuse
    json.dumps(views.curves(state), allow_nan=False)
    json.dumps(views.lineage(state), allow_nan=False)


def test_redact_blanks_every_secret_and_the_password_in_urls() -> None:
    config = {
        "alerts": {"urls": ["slack://T0K3N/B1/SECRET1", "mailto://bob:PW2@example.com"], "min_severity": "info"},
        "bus": {"curve_server_secret": "/keys/SECRET3.key_secret", "allow_keys": ["PUB4"], "host": "127.0.0.1"},
        "optuna_storage": "postgresql://tuner:PW5@db/optuna",
        "external": {"env": {"HF_TOKEN": "SECRET6", "LANG": "C"}, "mlflow_tracking_uri": "https://u:PW7@mlflow"},
        "trainer": {"hparams": {"learning_rate": 0.001}},
    }
    out = json.dumps(views.redact(config))
    for secret in ("T0K3N", "SECRET1", "PW2", "SECRET3", "PUB4", "PW5", "SECRET6", "PW7"):
        assert secret not in out, secret
    kept = views.redact(config)
    assert kept["trainer"]["hparams"]["learning_rate"] == 0.001 and kept["external"]["env"]["LANG"] == "C"
    assert kept["external"]["mlflow_tracking_uri"] == "https://***@mlflow"


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:8050", True),
        ("localhost:8050", True),
        ("[::1]:8050", True),
        ("LOCALHOST", True),
        ("evil.example:8050", False),
        ("127.0.0.1.evil.example", False),
        ("", False),
    ],
)
def test_only_loopback_names_and_allowed_hosts_are_answered(host: str, ok: bool) -> None:
    access = Access.build("t", "127.0.0.1")
    assert access.host_ok(host) is ok
    assert Access.build("t", "127.0.0.1", ["tuner.lab"]).host_ok("tuner.lab:443")


def test_origins_are_checked_and_csrf_depends_on_the_token() -> None:
    access = Access.build("t1", "127.0.0.1", base_url="tuner")
    assert access.base_url == "/tuner/"
    assert access.origin_ok(None) and access.origin_ok("http://127.0.0.1:8050")
    assert not access.origin_ok("http://evil.example") and not access.origin_ok("null")
    assert access.csrf != Access.build("t2", "127.0.0.1").csrf and len(access.csrf) == 32
    assert access.token_ok("t1") and not access.token_ok("t2") and not access.token_ok(None)


def test_metrics_are_prometheus_text_with_the_runs_numbers(state: TunerState) -> None:
    body, content_type = render_metrics(state, subscribers=3, now=state.last_ts or 0.0)
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert f"smart_tuner_events_committed_total {float(state.last_seq)}" in text
    assert "smart_tuner_champion_objective " in text and 'smart_tuner_segments{status="finished"}' in text
    assert "smart_tuner_dashboard_streams 3.0" in text and "_created" not in text


def test_an_empty_state_renders_without_errors() -> None:
    empty = TunerState()
    for view in (views.overview(empty), views.lineage(empty), views.schedule(empty), views.curves(empty)):
        json.dumps(view, allow_nan=False)
    assert views.trials_csv(empty).startswith("trial_id,")
    assert render_metrics(empty)[0]


def test_the_page_and_its_assets_ship_with_the_package() -> None:
    from smart_tuner.actors.dashboard.server import STATIC, STATIC_FILES

    for name in STATIC_FILES:
        assert (STATIC / name).is_file(), name
    # the package-data line keeps them in a wheel
    assert '"smart_tuner.actors.dashboard" = ["static/*"]' in (RUN.parents[3] / "pyproject.toml").read_text()


def test_running_segments_show_how_far_the_live_feed_says_they_are() -> None:
    from smart_tuner.state.fold import replay

    journal = FileJournal.open_readonly(RUN / "events.log")
    try:
        events = list(history.events(journal))
    finally:
        journal.close()
    started = next(i for i, e in enumerate(events) if e.type == "SegmentStarted")
    middle = replay(events[: started + 1])
    (seg,) = [s for s in middle.tuning.segments.values() if s.status == "running"]
    assert views.running(middle, {}) == [
        {"segment_id": seg.segment_id, "trial_id": seg.trial_id, "done": 0, "steps": seg.steps, "train_loss": None}
    ]
    (row,) = views.running(middle, {seg.segment_id: (seg.start_step + 4, float("nan"))})
    assert row["done"] == 4 and row["train_loss"] is None  # NaN is not JSON: shown as a dash


def test_a_metrics_record_encoded_from_its_raw_frame_is_the_text_the_full_decoder_gives() -> None:
    from smart_tuner.actors.dashboard.live import event_json, metrics_json, raw_metrics
    from smart_tuner.protocol import Envelope, encode
    from smart_tuner.protocol import messages as m
    from smart_tuner.protocol.codec import unpack

    for segment in ("r1-t2-g0", None):
        metrics = {"train_loss": float("nan"), "grad_norm": float("inf"), "lr": 1e-3, "neg": float("-inf")}
        message = m.MetricsObserved(segment_id=segment, source="worker", step=42, metrics=metrics)
        env = Envelope(
            seq=7, id="abc", ts=12.5, type=message.TYPE, tv=message.TV, actor="w", corr="c", cause=None, data=message
        )
        payload = encode(env)
        frame = unpack(payload)
        assert raw_metrics(7, frame) is not None and raw_metrics(8, frame) is None  # the seq must match
        assert metrics_json(frame) == event_json(history.decode_record(7, payload))
    other = encode(Envelope.new(m.StopRequested(source="x", reason="y"), actor="cli"))
    assert raw_metrics(0, unpack(other)) is None
