"""The "redact" stage: secrets and personal data are masked before storage.

Each match becomes ``[REDACTED:<label>]``. Where a pattern has a named group
``secret`` (``api_key=...`` assignments, ``Bearer <token>``; custom patterns may
use it too) only that group is replaced, so the reader still sees what kind of
value was there. Digit patterns are checked before they count: cards by Luhn,
IBANs by mod-97, phones by digit count, so ids, dates and token counts stay.

Patterns run in order over the text (most specific first) and a later pattern
sees earlier placeholders, never the original secret: nothing is counted twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["REDACTION_MODES", "RedactionPolicy", "RedactionRules", "redact_text"]


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_ok(match: str) -> bool:
    digits = match.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and _luhn(digits)


def _iban_ok(match: str) -> bool:
    iban = match.replace(" ", "")
    if not 15 <= len(iban) <= 34:
        return False
    # ISO 13616: move the first four characters to the end, letters -> 10..35.
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def _phone_ok(match: str) -> bool:
    n = sum(c.isdigit() for c in match)
    # E.164 allows at most 15 digits. A bare "+12000000" is more likely a
    # count than a phone, so unseparated numbers need 10 digits.
    separated = any(c in " .-()" for c in match)
    return (8 if separated else 10) <= n <= 15


# Built-ins, applied in this order: (label, regex, cheap test that the text may
# match at all, validator of the matched text).
# Speed: a regex that starts with a literal ("sk-", "eyJ", "+") is found by a
# fast scan, so word-boundary look-behinds sit after that literal, not before.
# Every regex can only start at the beginning of a run and every look-ahead is
# bounded, so long blobs (base64 images, embeddings) scan in linear time.
_Check = Callable[[str], bool] | None
_ASSIGN_KEYWORDS = ("key", "token", "secret", "password", "passwd")
# Quotes may be JSON-escaped (\"apiKey\": \"...\"): content is often JSON text.
_ASSIGN_TAIL = re.compile(r"\\?[\"']?\s*[:=]")


def _may_assign(text: str) -> bool:
    # The case-insensitive assignment regex costs ~35 ns/char; most text has
    # "key" or "token" only in prose, so first look for keyword + ':'/'='.
    lower = text.lower()
    for kw in _ASSIGN_KEYWORDS:
        i = lower.find(kw)
        while i >= 0:
            if _ASSIGN_TAIL.match(lower, i + len(kw)):
                return True
            i = lower.find(kw, i + 1)
    return False


def _has_any(*needles: str) -> Callable[[str], bool]:
    return lambda text: any(n in text for n in needles)


_BUILTINS: tuple[tuple[str, str, _Check, _Check], ...] = (
    # A truncated block (content is often cut) is redacted to the end, or to
    # the next '"' (a key holds none), which keeps JSON content valid JSON.
    (
        "private_key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
        r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|[^\"]*)",
        None,
        None,
    ),
    ("jwt", r"eyJ(?<![\w-]eyJ)[\w-]{5,}\.eyJ[\w-]{5,}\.[\w-]*", None, None),
    # OpenAI sk-/sk-proj-/sk-svcacct-, Anthropic sk-ant-. Real keys are random and
    # hold a digit; "sk-learn-style-words" do not.
    ("api_key", r"sk-(?<![\w-]sk-)(?=[\w-]{0,256}\d)[\w-]{20,}", None, None),
    ("api_key", r"A[KS]IA(?<![A-Za-z0-9]A[KS]IA)[A-Z0-9]{16}(?![A-Za-z0-9])", None, None),
    ("api_key", r"AIza(?<![\w-]AIza)[\w-]{35}(?![\w-])", None, None),
    ("api_key", r"gh[pousr]_(?<![A-Za-z0-9]gh._)[A-Za-z0-9]{36,}(?!\w)", None, None),
    ("api_key", r"github_pat_(?<![A-Za-z0-9]github_pat_)\w{22,}", None, None),
    ("api_key", r"xox[baprs]-(?<![A-Za-z0-9]xox.-)[A-Za-z0-9-]{10,}", None, None),
    (
        "bearer",
        r"(?:[Bb]earer|BEARER)(?<!\w[Bb]earer)(?<!\wBEARER)\s+"
        r"(?P<secret>(?=[\w.~+/-]{0,256}\d)[\w.~+/-]{16,}=*)",
        _has_any("earer", "EARER"),
        None,
    ),
    # Credential assignments in code, JSON, env files and headers; only the
    # value is replaced. It must hold a digit so `api_key=os.environ[...]` stays.
    (
        "api_key",
        r"(?i:(?<![\w-])(?:x[_-]?)?(?:api[_-]?key|api[_-]?token|secret[_-]?key"
        r"|client[_-]?secret|access[_-]?token|auth[_-]?token|password|passwd))\\?[\"']?\s*[:=]\s*"
        r"\\?[\"']?(?P<secret>(?=[\w.~+/=!@#$%^*-]{0,256}\d)[\w.~+/=!@#$%^*-]{8,})",
        _may_assign,
        None,
    ),
    (
        "email",
        # An apostrophe may sit inside the local part (o'brien@...), not at its ends.
        r"(?<![\w.%+-])[\w.%+-]+(?:'[\w.%+-]+)*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,63}(?![\w-])",
        _has_any("@"),
        None,
    ),
    (
        "iban",
        r"[A-Z](?<![A-Za-z0-9].)[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?"
        r"(?![A-Za-z0-9])",
        None,
        _iban_ok,
    ),
    # Issuer ranges start with 2-6 (Mastercard, Visa, Amex, Discover, JCB,
    # UnionPay...): keeps 13-19 digit ids and epoch-ns timestamps (1...) out.
    # Digits after a '.' are a decimal fraction (probabilities, embeddings).
    (
        "card",
        r"[2-6](?<![\d.,+-].)(?:\d{12,18}|\d{3}(?P<sep>[ -])\d{4,6}(?:(?P=sep)\d{3,5}){1,3})"
        r"(?!\d|[.,]\d)",
        None,
        _card_ok,
    ),
    (
        "phone",
        r"\+(?<![\w+]\+)\d{1,15}(?:[ .-]?\(\d{1,5}\)[ .-]?\d{1,10}|[ .-]\d{1,10}){0,6}(?!\d)",
        None,
        _phone_ok,
    ),
    # US style needs separators, so plain integers and ISO dates never match.
    ("phone", r"\((?<![\w(]\()\d{3}\) ?\d{3}[ .-]\d{4}(?!\w|[.-]\d)", None, _phone_ok),
    (
        "phone",
        r"\d(?<![\w.+-]\d)(?:[ .-]\d{3}|\d{2})[ .-]\d{3}[ .-]\d{4}(?!\w|[.-]\d)",
        None,
        _phone_ok,
    ),
)

_COMPILED = tuple((label, re.compile(rx)) for label, rx, _, _ in _BUILTINS)
# Prefilters and validators are keyed by the compiled pattern, so a custom
# pattern that replaces a built-in label never inherits the built-in's checks.
_CHECKS: dict[re.Pattern[str], tuple[_Check, _Check]] = {
    pat: (may_match, check)
    for (_, pat), (_, _, may_match, check) in zip(_COMPILED, _BUILTINS, strict=True)
}
# (pattern, prefilter, validator, placeholder, group to replace)
_Step = tuple[re.Pattern[str], _Check, _Check, str, int]


@dataclass(frozen=True)
class RedactionRules:
    patterns: tuple[tuple[str, re.Pattern[str]], ...]  # (label, compiled), applied in order
    _steps: tuple[_Step, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        steps = tuple(
            (
                pat,
                *_CHECKS.get(pat, (None, None)),
                f"[REDACTED:{label}]",
                pat.groupindex.get("secret", 0),
            )
            for label, pat in self.patterns
        )
        object.__setattr__(self, "_steps", steps)

    @classmethod
    def default(cls, extra: Mapping[str, str] | None = None) -> RedactionRules:
        """Built-in rules plus ``extra`` (label -> regex) from configuration.

        An extra label equal to a built-in one replaces all built-in patterns
        of that label; other extras run after the built-ins.
        """
        custom: list[tuple[str, re.Pattern[str]]] = []
        for label, rx in (extra or {}).items():
            if not label or not re.fullmatch(r"[\w.-]+", label):
                raise ValueError(f"redaction pattern label {label!r} must be a non-empty word")
            try:
                custom.append((label, re.compile(rx)))
            except (re.error, TypeError) as e:
                raise ValueError(f"redaction pattern {label!r} is not a valid regex: {e}") from None
        replaced = {label for label, _ in custom}
        kept = tuple((label, pat) for label, pat in _COMPILED if label not in replaced)
        return cls(kept + tuple(custom))


# What happens to a team's content: "mask" applies the rules, "drop" stores
# none, "off" stores it as sent.
REDACTION_MODES = ("off", "mask", "drop")


@dataclass(frozen=True)
class RedactionPolicy:
    """The redaction mode per team; teams not listed get ``default``."""

    default: str = "mask"
    teams: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for who, mode in [("default", self.default), *self.teams.items()]:
            if mode not in REDACTION_MODES:
                choices = ", ".join(REDACTION_MODES)
                raise ValueError(f"redaction mode for {who!r} is {mode!r}; use one of {choices}")
        modes = set(self.teams.values()) | {self.default}
        # One mode for everyone: the pipeline then skips the per-row team lookup.
        object.__setattr__(self, "_uniform", self.default if len(modes) == 1 else None)

    @property
    def uniform(self) -> str | None:
        """The mode when every team has the same one, else None."""
        return self._uniform  # type: ignore[attr-defined]

    def mode_for(self, team: str) -> str:
        return self.teams.get(team, self.default)


# Content mostly arrives as JSON text, where a line break is the escape "\n":
# its "n" would glue a value at the start of a line to the word before it and
# hide it from the look-behinds. While matching, each such escape becomes a
# backslash and a real line break (same length), turned back afterwards.
_ESCAPED_BREAK = "\\n"
_SWAPPED_BREAK = "\\\n"


def redact_text(text: str, rules: RedactionRules) -> tuple[str, int]:
    """Return ``(redacted text, number of redactions)``."""
    if not text:
        return text, 0
    # A text with real backslash+break pairs is left as is: they would be
    # taken for swapped escapes on the way back.
    swapped = _ESCAPED_BREAK in text and _SWAPPED_BREAK not in text
    if swapped:
        text = text.replace(_ESCAPED_BREAK, _SWAPPED_BREAK)
    text, count = _redact(text, rules)
    if swapped:
        text = text.replace(_SWAPPED_BREAK, _ESCAPED_BREAK)
    return text, count


def _redact(text: str, rules: RedactionRules) -> tuple[str, int]:
    count = 0
    for pattern, may_match, check, placeholder, group in rules._steps:
        if may_match is not None and not may_match(text):
            continue
        pieces: list[str] = []
        pos = 0
        for m in pattern.finditer(text):
            if check is not None and not check(m.group(0)):
                continue
            start, end = m.span(group)
            if start == end:  # empty match or unset secret group: nothing to hide
                continue
            pieces.append(text[pos:start])
            pieces.append(placeholder)
            pos = end
            count += 1
        if pieces:
            pieces.append(text[pos:])
            text = "".join(pieces)
    return text, count
