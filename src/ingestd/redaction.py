"""Secrets out of text before it is chunked, embedded (perhaps by a cloud API) and stored.

A documented pattern set rather than detect-secrets: detect-secrets has had no release since
2024, scans line by line through a plugin registry built for pre-commit hooks, reports findings
without replacement spans we could use directly, and its high-entropy plugins flag exactly what
transcripts are full of (git SHAs, UUIDs, base64 images). The patterns here are the well-known
shapes with fixed prefixes, which almost never occur by accident, plus keyword assignments and
URLs with passwords, which need context to be told apart from prose and code.

Authorization headers lose their credentials whatever the scheme (Basic is only base64 of
`user:password`).

Each match becomes a typed placeholder such as `[REDACTED:aws-access-key]`; for an assignment or
a URL only the value goes, so `DB_PASSWORD=[REDACTED:password]` still says what was there.
Deliberately not caught: bare 40-character AWS secret keys outside an assignment (they look
like any base64), passwords in free prose ("the password is hunter2"), and values shorter than
four characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable

PLACEHOLDER = "[REDACTED:{}]"

_B64URL = r"[A-Za-z0-9_\-]"

# Shapes with a distinctive prefix: the whole match goes. Order matters (sk-ant- before sk-).
_SHAPES: list[tuple[str, re.Pattern[str]]] = [
    (
        "private-key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"(?:.{0,20000}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"|(?:\s*(?:[A-Za-z0-9+/=]{20,}|[A-Za-z\-]+:[^\n]*))*)",  # cut off: its header and body
            re.DOTALL,
        ),
    ),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*")),
    ("aws-access-key", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b")),
    ("github-token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b")),
    ("gitlab-token", re.compile(r"\bgl(?:pat|dt|rt|ptt|soat)-" + _B64URL + r"{20,}")),
    ("slack-token", re.compile(r"\b(?:xox[abprs]-[A-Za-z0-9\-]{10,}|xapp-\d-[A-Za-z0-9\-]{10,})")),
    ("slack-webhook", re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_\-]{20,}")),
    ("anthropic-key", re.compile(r"\bsk-ant-" + _B64URL + r"{20,}")),
    # Google API keys (Maps, Gemini, Firebase, …): AIza and exactly 35 more characters.
    ("google-api-key", re.compile(r"\bAIza" + _B64URL + r"{35}(?!" + _B64URL + ")")),
    # OpenAI and Voyage keys are mixed-case with digits; kebab-case words are not.
    (
        "openai-key",
        re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?(?=" + _B64URL + r"*\d)" + _B64URL + r"{20,}"),
    ),
    (
        "voyage-key",
        re.compile(r"\bpa-(?=" + _B64URL + r"*\d)(?=" + _B64URL + r"*[A-Za-z])" + _B64URL + r"{24,}"),
    ),
]

# scheme://user:password@host — only the password goes.
_URL_CREDENTIALS = re.compile(
    r"\b(?P<head>[A-Za-z][A-Za-z0-9+.\-]{1,30}://[^\s:/@'\"<>]{0,100}:)(?P<value>[^\s@/'\"<>]{1,200})(?=@)"
)

# An AWS secret key is 40 characters of base64, like many harmless strings: only after its name.
_AWS_SECRET = re.compile(
    r"(?P<head>(?i:aws_?secret_?(?:access_?)?key|secret_?access_?key)[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
)

# Authorization headers (and curl's -H) with a Basic, Bearer or Token scheme: the credentials
# go, the header name and scheme stay. A scheme is required, so "Authorization: required"
# stays, and the value needs a digit or a base64 symbol, so prose ("…: Basic scheme") stays too.
_AUTH_HEADER = re.compile(
    r"(?P<head>\b(?i:(?:proxy-)?authorization)[\"']?\s*[:=]\s*[\"']?(?P<scheme>(?i:basic|bearer|token))\s+)"
    r"(?P<value>(?=[A-Za-z0-9._~\-]*[0-9+/=])[A-Za-z0-9._~+/\-]{6,}=*)"
)

# Bearer tokens elsewhere (SDK calls, logs).
_BEARER = re.compile(r"(?P<head>\b[Bb]earer\s+)(?P<value>[A-Za-z0-9._~+/\-]{16,}=*)")

# key = value, key: value, "key": "value". The key must END in a secret word, so `max_tokens`
# and `token_count` are not keys; GITHUB_TOKEN and aws_secret_access_key are.
_KEY = (
    r"(?P<key>[A-Za-z0-9_.\-]{0,40}?(?:password|passwd|passphrase|pwd|secret|token|api[_\-]?key|apikey"
    r"|access[_\-]?key|private[_\-]?key|client[_\-]?secret|credentials?))"
)
# A bare value counts when it is tight (`--password=x y`, `?token=x&`) or ends its line
# (`password: x`), which keeps out prose such as "password: click the link below".
_BARE = r"[^\s\"'`,;(){}\[\]<>]{4,300}"
_ASSIGNMENT = re.compile(
    r"(?<![A-Za-z0-9_.\-])" + _KEY + r"(?![A-Za-z0-9_])[\"']?"
    r"(?:=(?P<tight>" + _BARE.replace(";", ";&") + r")(?=[\s,;&]|$)"
    r"|\s*(?::=|=>|[:=])[ \t]*"
    r"(?:(?P<quote>[\"'])(?P<quoted>[^\"'\n]{4,300})(?P=quote)"
    r"|(?P<bare>" + _BARE + r")(?=[ \t]*(?:$|[,;}#]))))",
    re.IGNORECASE | re.MULTILINE,
)
_NOT_SECRET = re.compile(
    r"""^(?:
        \$\{?[A-Za-z_][A-Za-z0-9_]*\}?            # $VAR, ${VAR}
      | \{\{.*\}\} | <[^>]*> | %\(?\w+\)?s?        # templates
      | \*+ | x+ | X+ | \.+ | -+                  # masks
      | (?i:true|false|null|none|nil|undefined|required|optional|string|redacted|changeme)
      | -?\d+(?:\.\d+)?                            # numbers
      | [A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+  # attribute access: self.password
    )$""",
    re.VERBOSE,
)


def _kind_of_key(key: str) -> str:
    key = key.lower()
    if "pass" in key or "pwd" in key:
        return "password"
    if "token" in key:
        return "token"
    if "api" in key and "key" in key:
        return "api-key"
    if "private" in key:
        return "private-key"
    return "secret"


def _is_placeholder(value: str) -> bool:
    return "[REDACTED:" in value or bool(_NOT_SECRET.match(value))


def redact(text: str) -> tuple[str, int]:
    """The text with every secret replaced by a typed placeholder, and how many were replaced."""
    total = 0
    for kind, pattern in _SHAPES:
        text, count = pattern.subn(PLACEHOLDER.format(kind), text)
        total += count
    for pattern, namer in (
        (_AWS_SECRET, _aws_secret),
        (_URL_CREDENTIALS, _password),
        (_AUTH_HEADER, _auth_scheme),
        (_BEARER, _bearer),
    ):
        text, count = _replace_values(pattern, text, namer)
        total += count
    text, count = _replace_assignments(text)
    return text, total + count


def _password(_: re.Match[str]) -> str:
    return "password"


def _aws_secret(_: re.Match[str]) -> str:
    return "aws-secret-key"


def _bearer(_: re.Match[str]) -> str:
    return "bearer-token"


def _auth_scheme(match: re.Match[str]) -> str:
    return {"basic": "basic-auth", "bearer": "bearer-token"}.get(match["scheme"].lower(), "token")


def _replace_values(
    pattern: re.Pattern[str], text: str, kind: Callable[[re.Match[str]], str]
) -> tuple[str, int]:
    count = 0

    def swap(match: re.Match[str]) -> str:
        nonlocal count
        if _is_placeholder(match["value"]):
            return match[0]
        count += 1
        return match["head"] + PLACEHOLDER.format(kind(match))

    return pattern.sub(swap, text), count


def _replace_assignments(text: str) -> tuple[str, int]:
    count = 0

    def swap(match: re.Match[str]) -> str:
        nonlocal count
        group = next(name for name in ("tight", "quoted", "bare") if match[name] is not None)
        value = match[group]
        if _is_placeholder(value.strip()):
            return match[0]
        count += 1
        start, end = match.start(group) - match.start(), match.end(group) - match.start()
        whole = match[0]
        return whole[:start] + PLACEHOLDER.format(_kind_of_key(match["key"])) + whole[end:]

    return _ASSIGNMENT.sub(swap, text), count
