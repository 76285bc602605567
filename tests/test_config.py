from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_layers_file_then_env_then_flags(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("rate: {rpm: 30, concurrency: 2}\nendpoints: {api_base: http://file}\n")
    env = {"ONEMIN_API_BASE": "http://env/"}
    settings = load_settings(profile, env, {"rate": {"concurrency": 5, "rpm": None}})
    assert settings.rate.rpm == 30  # file, not overridden by an unset flag
    assert settings.rate.concurrency == 5  # the flag wins
    assert settings.endpoints.api_base == "http://env"  # env beats file; trailing / dropped


def test_builtin_defaults_without_layers() -> None:
    assert load_settings(None, {}, None) == Settings()


PROFILES = sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name != "credits.yaml")


def test_profiles_exist() -> None:
    assert {"default.yaml", "nightly.yaml", "fast.yaml"} <= set(PROFILES)


@pytest.mark.parametrize("name", PROFILES)
def test_shipped_profiles_load(name: str) -> None:
    settings = load_settings(CONFIGS / name, {}, None)
    if name == "default.yaml":  # the file spells out the built-in defaults, and must agree
        assert settings == Settings()


def test_default_profile_spells_out_every_setting() -> None:
    data = yaml.safe_load((CONFIGS / "default.yaml").read_text())
    settings = Settings()
    for group in ("endpoints", "rate", "retry", "timeouts"):
        assert set(data[group]) == {f.name for f in fields(getattr(settings, group))}, group
    top = {f.name for f in fields(settings)} - {"endpoints", "rate", "retry", "timeouts"}
    assert top <= set(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rate: {rpmm: 3}", "unknown setting rate.rpmm"),
        ("ratee: {}", "unknown settings group"),
        ("rate: {rpm: fast}", "rate.rpm: expected float"),
        ("rate: {concurrency: -1}", "must not be negative"),
        ("rate: [1, 2]", "expected a mapping"),
        ("- a list", "a settings file is a mapping"),
        ("rate: {rpm: [", "not valid YAML"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_settings(profile, {}, None)


def test_rate_and_submit_flags_reach_settings_through_run_options() -> None:
    from pipeline.cli import build_parser
    from pipeline.cli.run import options_from_args
    from pipeline.runner.options import RunOptions

    argv = ["run", "m.yaml", "--concurrency", "auto", "--max-concurrency", "64", "--sync"]
    options = options_from_args(build_parser().parse_args(argv))
    assert (options.concurrency, options.max_concurrency, options.submit) == ("auto", 64, "sync")
    settings = load_settings(None, {}, options.settings_flags())
    assert (settings.rate.auto, settings.rate.ceiling, settings.submit) == (True, 64, "sync")
    # The Python API takes the same names as keyword arguments (RunOptions' fields).
    fixed = RunOptions(manifest=Path("m.yaml"), concurrency=12, submit="async")
    settings = load_settings(None, {}, fixed.settings_flags())
    assert (settings.rate.auto, settings.rate.ceiling, settings.submit) == (False, 12, "async")
    with pytest.raises(ConfigError, match="concurrency"):
        load_settings(None, {}, RunOptions(Path("m.yaml"), concurrency="many").settings_flags())
