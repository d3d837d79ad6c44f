"""Configuration settings parsed from the environment, with a one-line error for a bad value."""

import pytest

from jmapmono.config import ConfigError, load_config, parse_size

BASE = {"DATABASE_URL": "sqlite:///x.sqlite3"}


def test_quota_defaults_are_unlimited_and_sizes_take_units():
    config = load_config(BASE)
    assert (config.quota_storage, config.quota_messages) == (None, None)
    config = load_config({**BASE, "JMAPMONO_QUOTA_STORAGE": "2G", "JMAPMONO_QUOTA_MESSAGES": "100000"})
    assert (config.quota_storage, config.quota_messages) == (2 * 1024**3, 100_000)
    assert [parse_size(v) for v in ("1024", "500M", "1k", "3TB", "none", "")] == [
        1024,
        500 * 1024**2,
        1024,
        3 * 1024**4,
        None,
        None,
    ]


@pytest.mark.parametrize(
    "name, value",
    [("JMAPMONO_QUOTA_STORAGE", "lots"), ("JMAPMONO_QUOTA_STORAGE", "-1"), ("JMAPMONO_QUOTA_MESSAGES", "1.5")],
)
def test_bad_quota_settings_are_refused_in_one_line(name, value):
    with pytest.raises(ConfigError) as e:
        load_config({**BASE, name: value})
    assert name in str(e.value) and "\n" not in str(e.value)


def test_search_languages_detect_by_default_and_take_codes_or_off():
    assert load_config(BASE).search_languages is None
    assert load_config({**BASE, "JMAPMONO_SEARCH_LANGUAGES": "Detect"}).search_languages is None
    assert load_config({**BASE, "JMAPMONO_SEARCH_LANGUAGES": "off"}).search_languages == ()
    assert load_config({**BASE, "JMAPMONO_SEARCH_LANGUAGES": " de, en,de "}).search_languages == ("de", "en")
    with pytest.raises(ConfigError) as e:
        load_config({**BASE, "JMAPMONO_SEARCH_LANGUAGES": "en,xx"})
    assert "JMAPMONO_SEARCH_LANGUAGES" in str(e.value) and "'xx'" in str(e.value) and "\n" not in str(e.value)
