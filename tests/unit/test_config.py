"""Tests for ``state/config/``: the schema, the loader's error messages and ``${NAME}`` expansion."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from smart_tuner.state.config import (
    DEFAULTS_SOURCE,
    ConfigError,
    LoadedConfig,
    SearchParam,
    TunerConfig,
    dump_config,
    load_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "smart_tuner.yaml"
SECRET = "hooks.slack.com/services/T000/B000/s3cr3t-token-value"
NO_ENV: dict[str, str] = {}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "smart_tuner.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> LoadedConfig:
    return load_config(write(tmp_path, text), environ=NO_ENV if environ is None else environ)


def error_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, environ)
    message = str(info.value)
    assert str(tmp_path / "smart_tuner.yaml") in message  # every error names the file
    return message


# --- defaults and the example file ---------------------------------------------


def test_defaults_load_without_a_file() -> None:
    loaded = load_config(None, environ=NO_ENV)
    assert loaded.source == DEFAULTS_SOURCE
    assert loaded.raw == TunerConfig()
    assert loaded.resolved == loaded.raw
    assert loaded.raw.strategy == "forks"
    assert loaded.raw.search_algorithm == "tpe"
    assert loaded.raw.search_space == {
        "learning_rate": SearchParam(type="loguniform", low=1e-4, high=3e-2),
        "p_encoder_dropout": SearchParam(type="uniform", low=0.0, high=0.5),
        "p_postnet_dropout": SearchParam(type="uniform", low=0.0, high=0.5),
        "p_attention_dropout": SearchParam(type="uniform", low=0.0, high=0.3),
        "p_decoder_dropout": SearchParam(type="uniform", low=0.0, high=0.3),
        "adam_beta2": SearchParam(type="categorical", choices=[0.98, 0.999]),
    }
    assert loaded.raw.bus.transport == "ipc"
    assert loaded.raw.stop.patience == 4
    assert loaded.raw.budget.max_hours is None
    assert len(loaded.config_hash) == 64


def test_example_file_equals_defaults() -> None:
    example = load_config(EXAMPLE, environ=NO_ENV)
    defaults = load_config(None, environ=NO_ENV)
    assert example.raw == defaults.raw
    assert example.config_hash == defaults.config_hash


def test_example_file_writes_out_every_key() -> None:
    document = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    recordable = load_config(None, environ=NO_ENV).recordable()
    assert set(document) == set(recordable)
    for section, value in recordable.items():
        if isinstance(value, dict) and section != "search_space":
            assert set(document[section]) == set(value), section


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_text(tmp_path, "# nothing here\n").raw == TunerConfig()


def test_seed_keys_and_every_search_type_are_accepted(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        """
search_algorithm: cmaes
n_startup_trials: 8
n_trials: 50
resume_from_checkpoint: /ckpt/tacotron2_step_10000.pt
search_space:
  learning_rate: {type: loguniform, low: 1e-5, high: 1e-2}
  dropout: {type: uniform, low: 0.0, high: 0.5, step: 0.05}
  warmup_steps: {type: int, low: 0, high: 4000, step: 500}
  batch_size: {type: categorical, choices: [16, 32, 64]}
  use_amp: {type: categorical, choices: [true, false]}
  optimizer: {type: categorical, choices: [adam, adamw]}
""",
    )
    cfg = loaded.raw
    assert (cfg.search_algorithm, cfg.n_startup_trials, cfg.n_trials) == ("cmaes", 8, 50)
    assert cfg.resume_from_checkpoint == "/ckpt/tacotron2_step_10000.pt"
    space = cfg.search_space
    assert space["learning_rate"].low == 1e-5  # YAML 1.1 would read `1e-5` as a string
    assert space["dropout"].step == 0.05
    assert space["warmup_steps"] == SearchParam(type="int", low=0, high=4000, step=500)
    assert isinstance(space["warmup_steps"].low, int)
    assert space["batch_size"].choices == [16, 32, 64]
    assert space["use_amp"].choices == [True, False]
    assert space["optimizer"].choices == ["adam", "adamw"]


def test_grid_accepts_int_and_categorical(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        "search_algorithm: grid\nsearch_space:\n  n: {type: int, low: 1, high: 3}\n"
        "  c: {type: categorical, choices: [a]}\n",
    )
    assert set(loaded.raw.search_space) == {"n", "c"}


def test_dump_config_round_trips(tmp_path: Path) -> None:
    text = "seed: 7\nsearch_space:\n  b: {type: categorical, choices: [2, x, true, 0.5]}\nalerts: {urls: ['${HOOK}']}\n"
    loaded = load_text(tmp_path, text, {"HOOK": SECRET})
    again = load_text(tmp_path, dump_config(loaded.raw), {"HOOK": SECRET})
    assert again.raw == loaded.raw
    assert again.config_hash == loaded.config_hash


# --- validation messages -------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("{type: loguniform, low: 0.0, high: 0.1}", ["loguniform needs low > 0", "low=0.0"]),
        ("{type: loguniform, low: 1.0e-3}", ["needs both low and high", "high=None"]),
        ("{type: uniform, low: 0.5, high: 0.1}", ["needs low < high", "low=0.5", "high=0.1"]),
        ("{type: uniform, low: 0.1, high: 0.1}", ["needs low < high", "low=0.1"]),
        ("{type: uniform, low: 0, high: 1, choices: [a]}", ["not choices", "['a']"]),
        ("{type: int, low: 1.5, high: 4}", ["int needs integer low", "low=1.5"]),
        ("{type: int, low: 1, high: 8, step: 0.5}", ["int needs integer step", "step=0.5"]),
        ("{type: uniform, low: 0, high: 1, step: -0.1}", ["step > 0", "step=-0.1"]),
        ("{type: loguniform, low: 0.1, high: 1, step: 0.1}", ["loguniform takes no step", "step=0.1"]),
        ("{type: categorical, choices: []}", ["non-empty choices", "choices=[]"]),
        ("{type: categorical}", ["non-empty choices", "choices=None"]),
        ("{type: categorical, choices: [a, b, a]}", ["unique", "'a' twice"]),
        ("{type: categorical, choices: [1, true]}", ["unique", "True twice"]),
        ("{type: categorical, choices: [a], low: 0, high: 1}", ["no low/high", "low=0"]),
        ("{type: categorical, choices: [a, null]}", ["choices[1]", "None"]),
        ("{type: uniform, low: .nan, high: 1}", ["finite number", "nan"]),
        ("{type: uniform, low: true, high: 2}", ["finite number", "True"]),
    ],
)
def test_search_param_errors_name_path_and_value(tmp_path: Path, param: str, expected: list[str]) -> None:
    message = error_of(tmp_path, f"search_space:\n  lr: {param}\n")
    assert "search_space.lr" in message
    for text in expected:
        assert text in message


def test_unknown_search_type_is_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, "search_space:\n  lr: {type: normal, low: 0, high: 1}\n")
    assert "search_space.lr.type" in message
    assert "'normal'" in message


def test_search_space_names_must_be_identifiers(tmp_path: Path) -> None:
    message = error_of(tmp_path, "search_space:\n  learning-rate: {type: uniform, low: 0, high: 1}\n")
    assert "search_space:" in message
    assert "'learning-rate'" in message
    assert "identifier" in message


def test_grid_refuses_continuous_parameters(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        "search_algorithm: grid\nsearch_space:\n  n: {type: int, low: 1, high: 3}\n"
        "  lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n",
    )
    assert "search_space" in message
    assert "grid search needs finite values" in message
    assert "'lr' is loguniform" in message


def test_the_guards_section_is_validated_and_absent_leaves_the_hash_alone(tmp_path: Path) -> None:
    assert "guards.spike_factor" in error_of(tmp_path, "guards: {spike_factor: 0.5}\n")
    assert "guards.max_tries" in error_of(tmp_path, "guards: {max_tries: 0}\n")
    assert "guards.grad_explode" in error_of(tmp_path, "guards: {grad_explode: 5}\n")  # a typo is refused
    assert load_text(tmp_path, "guards: {max_tries: 2}\n").raw.guards.max_tries == 2
    defaults = load_text(tmp_path, "strategy: forks\n").config_hash
    assert load_text(tmp_path, "guards: {max_tries: 4}\n").config_hash == defaults  # the default, written out
    assert load_text(tmp_path, "guards: {max_tries: 3}\n").config_hash != defaults


def test_a_test_set_is_named_once(tmp_path: Path) -> None:
    message = error_of(tmp_path, "trainer: {test_dataset: /data/test, test_count: 20}\n")
    assert "test_dataset and test_count both name a test set" in message
    assert "-1" in error_of(tmp_path, "trainer: {test_count: -1}\n")
    assert load_text(tmp_path, "trainer: {test_count: 20}\n").raw.trainer.test_count == 20


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("seed: -1", "seed", "-1"),
        ("seed: '5'", "seed", "'5'"),
        ("n_trials: 0", "n_trials", "0"),
        ("n_trials: 2.0", "n_trials", "2.0"),
        ("n_startup_trials: -3", "n_startup_trials", "-3"),
        ("n_gpus: -1", "n_gpus", "-1"),
        ("strategy: bandit", "strategy", "'bandit'"),
        ("search_algorithm: anneal", "search_algorithm", "'anneal'"),
        ("log_level: verbose", "log_level", "'verbose'"),
        ("budget: {max_hours: 0}", "budget.max_hours", "0"),
        ("budget: {max_steps: -10}", "budget.max_steps", "-10"),
        ("budget: {max_gpu_hours: -1.5}", "budget.max_gpu_hours", "-1.5"),
        ("stop: {min_delta: -0.1}", "stop.min_delta", "-0.1"),
        ("stop: {patience: 0}", "stop.patience", "0"),
        ("bus: {transport: udp}", "bus.transport", "'udp'"),
        ("bus: {hwm: 0}", "bus.hwm", "0"),
        ("bus: {max_message_bytes: 512}", "bus.max_message_bytes", "512"),
        ("bus: {max_message_bytes: 67108865}", "bus.max_message_bytes", "67108865"),
        ("bus: {linger_ms: -1}", "bus.linger_ms", "-1"),
        ("journal: {fsync: maybe}", "journal.fsync", "'maybe'"),
        ("journal: {group_commit_max: 0}", "journal.group_commit_max", "0"),
        ("journal: {state_write_interval_s: -1}", "journal.state_write_interval_s", "-1"),
        ("journal: {snapshot_every: 0}", "journal.snapshot_every", "0"),
        ("alerts: {min_severity: debug}", "alerts.min_severity", "'debug'"),
        ("alerts: {rate_limit_per_min: 0}", "alerts.rate_limit_per_min", "0"),
        ("alerts: {urls: [5]}", "alerts.urls[0]", "5"),
    ],
)
def test_field_errors_name_path_and_value(tmp_path: Path, text: str, path: str, value: str) -> None:
    message = error_of(tmp_path, text + "\n")
    assert f": {path}: " in message
    assert f"(got {value})" in message


def test_every_error_gets_its_own_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "seed: -1\nn_trials: 0\n")
    lines = message.splitlines()
    assert len(lines) == 2
    assert any(": seed: " in line for line in lines)
    assert any(": n_trials: " in line for line in lines)


def test_long_values_are_truncated(tmp_path: Path) -> None:
    message = error_of(tmp_path, f"strategy: {'x' * 200}\n")
    assert "x" * 200 not in message
    assert "..." in message


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    message = error_of(tmp_path, "n_trails: 20\n")
    assert ": n_trails: Extra inputs are not permitted" in message


def test_unknown_nested_key_is_named(tmp_path: Path) -> None:
    message = error_of(tmp_path, "bus:\n  high_water_mark: 5\n")
    assert ": bus.high_water_mark: Extra inputs are not permitted" in message
    assert "(got 5)" in message


def test_unknown_search_param_key_is_named(tmp_path: Path) -> None:
    message = error_of(tmp_path, "search_space:\n  lr: {type: uniform, low: 0, high: 1, log: true}\n")
    assert "search_space.lr.log" in message


def test_tcp_on_a_public_host_needs_a_curve_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, "bus: {transport: tcp, host: 10.0.0.5}\n")
    assert ": bus: " in message
    assert "'10.0.0.5'" in message
    assert "curve_server_secret" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost"])
def test_tcp_on_loopback_needs_no_curve_key(tmp_path: Path, host: str) -> None:
    loaded = load_text(tmp_path, f"bus: {{transport: tcp, host: '{host}'}}\n")
    assert loaded.raw.bus.host == host


def test_tcp_on_a_public_host_with_a_curve_key_is_accepted(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path, "bus: {transport: tcp, host: 0.0.0.0, curve_server_secret: '${CURVE}'}\n", {"CURVE": "k" * 40}
    )
    assert loaded.raw.bus.curve_server_secret == "${CURVE}"
    assert loaded.resolved.bus.curve_server_secret == "k" * 40


# --- files and YAML ------------------------------------------------------------


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    message = error_of(tmp_path, "seed: 1\nbus:\n  transport: [ipc\nlog_level: info\n")
    assert "YAML error at line" in message
    assert "column" in message


def test_yaml_syntax_error_names_the_right_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "seed: 1\nn_trials: 2\nstrategy: forks: pbt\n")
    assert "line 3" in message


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, "seed: 1\nn_trials: 5\nseed: 2\n")
    assert "duplicate key 'seed'" in message
    assert "line 3" in message


@pytest.mark.parametrize(("text", "kind"), [("- seed\n- 1\n", "list"), ("just a string\n", "str"), ("42\n", "int")])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    message = error_of(tmp_path, text)
    assert "top level must be a mapping" in message
    assert kind in message


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=NO_ENV)
    assert f"{path}: cannot read config file" in str(info.value)


# --- ${NAME} expansion ---------------------------------------------------------

ALERTS = "alerts:\n  urls: ['slack://${SLACK_URL}']\nresume_from_checkpoint: ${CKPT_DIR}/last.pt\n"


def test_resolved_has_the_secret_and_raw_keeps_the_template(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, ALERTS, {"SLACK_URL": SECRET, "CKPT_DIR": "/data/ckpt"})
    assert loaded.resolved.alerts.urls[0].get_secret_value() == f"slack://{SECRET}"
    assert loaded.resolved.resume_from_checkpoint == "/data/ckpt/last.pt"
    assert loaded.raw.alerts.urls[0].get_secret_value() == "slack://${SLACK_URL}"
    assert loaded.raw.resume_from_checkpoint == "${CKPT_DIR}/last.pt"


def test_secret_reaches_no_recorded_form(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, ALERTS, {"SLACK_URL": SECRET, "CKPT_DIR": "/data"})
    recordable = loaded.recordable()
    assert recordable["alerts"]["urls"] == ["slack://${SLACK_URL}"]  # the template, not "**********"
    assert SECRET not in str(recordable)
    assert SECRET not in str(loaded.raw)
    assert SECRET not in repr(loaded)
    assert SECRET not in dump_config(loaded.raw)
    assert "slack://${SLACK_URL}" in dump_config(loaded.raw)


def test_config_hash_does_not_depend_on_the_environment(tmp_path: Path) -> None:
    first = load_text(tmp_path, ALERTS, {"SLACK_URL": SECRET, "CKPT_DIR": "/a"})
    second = load_text(tmp_path, ALERTS, {"SLACK_URL": "other-token", "CKPT_DIR": "/b"})
    assert first.resolved != second.resolved
    assert first.config_hash == second.config_hash


def test_config_hash_follows_the_template_text(tmp_path: Path) -> None:
    env = {"SLACK_URL": SECRET, "OTHER": SECRET, "CKPT_DIR": "/a"}
    first = load_text(tmp_path, ALERTS, env)
    second = load_text(tmp_path, ALERTS.replace("SLACK_URL", "OTHER"), env)
    assert first.config_hash != second.config_hash


def test_a_setting_added_later_leaves_the_hash_of_older_configs_alone(tmp_path: Path) -> None:
    """``forks.min_gate_stop_rate`` came after runs were recorded without it: at its default it is
    left out of the hash, so an older run's recorded config hashes as it did and resumes."""
    # as a run directory's config.yaml records it: every key written out (first_round_candidates at what
    # was its default then), so a later change of a default does not change what it says either
    recorded = "seed: 7\nforks:\n  margin: 0.02\n  first_round_candidates: 4\n"
    # the hash 6525b6f gave this config, before the setting existed
    older = "2a41a1f677642dd9b38d57605dd8c646da556ed6e0aa9d7840808b4216bf98c2"
    without = load_text(tmp_path, recorded)
    at_default = load_text(tmp_path, recorded + "  min_gate_stop_rate: 0.9\n")
    changed = load_text(tmp_path, recorded + "  min_gate_stop_rate: 0.5\n")
    assert without.config_hash == at_default.config_hash == older
    assert changed.config_hash != without.config_hash


def test_missing_variable_names_path_and_variable(tmp_path: Path) -> None:
    message = error_of(tmp_path, "alerts:\n  urls: ['${SLACK_URL}', '${TEAMS_URL}']\n", {"SLACK_URL": SECRET})
    assert "alerts.urls[1]: environment variable TEAMS_URL is not set" in message
    assert SECRET not in message


def test_escaped_template_stays_literal(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, "resume_from_checkpoint: /ckpt/$${RUN}/x.pt\n")
    assert loaded.raw.resume_from_checkpoint == "/ckpt/$${RUN}/x.pt"
    assert loaded.resolved.resume_from_checkpoint == "/ckpt/${RUN}/x.pt"


def test_os_environ_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMART_TUNER_TEST_HOST", "localhost")
    loaded = load_config(write(tmp_path, "bus: {host: '${SMART_TUNER_TEST_HOST}'}\n"))
    assert loaded.resolved.bus.host == "localhost"


def test_template_in_a_number_field_shows_the_template(tmp_path: Path) -> None:
    message = error_of(tmp_path, "seed: ${SEED}\n", {"SEED": "12345"})
    assert ": seed: " in message
    assert "(got '${SEED}')" in message
    assert "free-text string fields only" in message
    assert "12345" not in message


def test_error_after_expansion_shows_templates_not_values(tmp_path: Path) -> None:
    # valid as written, invalid only once expanded: the message must still not show the values
    text = "search_space:\n  model: {type: categorical, choices: ['${A}', '${B}']}\n"
    message = error_of(tmp_path, text, {"A": SECRET, "B": SECRET})
    assert "search_space.model" in message
    assert "unique" in message
    assert "${A}" in message
    assert SECRET not in message


def test_config_error_keeps_no_validation_error_behind(tmp_path: Path) -> None:
    text = "search_space:\n  model: {type: categorical, choices: ['${A}', '${B}']}\n"
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, {"A": SECRET, "B": SECRET})
    assert info.value.__cause__ is None
    assert info.value.__context__ is None
