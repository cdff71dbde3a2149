"""Settings: documented, typed, and loud about bad values."""

from dataclasses import fields
from pathlib import Path

import pytest

from nudge.config import Limits, Settings, load_settings
from nudge.errors import ConfigError

DOC = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()


def test_every_setting_is_documented() -> None:
    names = [f"NUDGE_{f.name.upper()}" for f in fields(Settings) if f.name != "limits"]
    names += [f"NUDGE_LIMIT_{f.name.upper()}" for f in fields(Limits)]
    missing = [n for n in names if f"`{n}`" not in DOC]
    assert not missing, f"undocumented settings: {missing}"


def test_environment_overrides_defaults() -> None:
    s = load_settings({"NUDGE_DEDUP_WINDOW_S": "60", "NUDGE_LIMIT_MAX_RECORDS": "10",
                       "NUDGE_DATA_DIR": "/srv/nudge-x"})
    assert (s.dedup_window_s, s.limits.max_records, s.data_dir) == (60, 10, Path("/srv/nudge-x"))


@pytest.mark.parametrize("env", [{"NUDGE_DEDUP_WINDOW_S": "soon"},
                                 {"NUDGE_LIMIT_MAX_RECORDS": "0"}])
def test_bad_values_fail_loudly_naming_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=next(iter(env))):
        load_settings(env)
