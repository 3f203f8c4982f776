"""Every message the console's templates and pages use exists in Chinese and in English, with the same fields."""

from __future__ import annotations

import re
import string

from node.web import MESSAGES, STATIC_DIR, translate

TEMPLATES = STATIC_DIR.parent / "templates"
PAGES = STATIC_DIR.parent
_LITERAL_KEY = re.compile(r"""\bt\(\s*f?['"]([a-z0-9_.]+)['"]""")


def _used_keys() -> set[str]:
    keys: set[str] = set()
    for path in [*TEMPLATES.glob("*.html"), *PAGES.glob("*.py")]:
        keys |= set(_LITERAL_KEY.findall(path.read_text(encoding="utf-8")))
    return {key for key in keys if not key.endswith(".")}


def test_every_used_key_is_translated() -> None:
    missing = sorted(key for key in _used_keys() if key not in MESSAGES)
    assert missing == []


def test_both_languages_take_the_same_fields() -> None:
    formatter = string.Formatter()
    for key, (zh, en) in MESSAGES.items():
        fields = [{name for _text, name, _spec, _conv in formatter.parse(text) if name} for text in (zh, en)]
        assert fields[0] == fields[1], key
        assert re.search(r"[\u4e00-\u9fff]", zh), f"{key}: the Chinese text has no Chinese"


def test_domain_terms() -> None:
    assert translate("metric.early_rate", "zh") == "提前办结率"
    assert translate("metric.return_rate", "zh") == "退件率"
    assert translate("severity.red", "zh") == "红牌" and translate("severity.yellow", "zh") == "黄牌"
    assert translate("nav.directives", "zh") == "督办"
    assert translate("metric.early_rate", "en") == "Early completion"
