"""User-facing errors. Every failure a user can cause is a DagsmithError with a position.

A spec can hold many mistakes at once, so a SpecError carries a list of Diagnostics and
the CLI prints them all, one per line: ``FILE:LINE:COL: error: spec.path: message``.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from dataclasses import dataclass
from typing import Iterable, NamedTuple


@dataclass(frozen=True, order=True)
class Mark:
    """A position in a spec file: 1-based line and column."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Diagnostic:
    mark: Mark
    path: str  # dotted spec path, e.g. "training.sweep.parameters" or "validation[0].on"
    message: str
    hint: str | None = None  # e.g. "did you mean 'training'?"
    level: str = "error"  # or "warning": printed, and the command goes on

    def format(self) -> str:
        text = f"{self.mark}: {self.level}: {self.path or '<root>'}: {self.message}"
        return f"{text}; {self.hint}" if self.hint else text

    def to_json(self) -> dict:
        return {
            "file": self.mark.file,
            "line": self.mark.line,
            "column": self.mark.column,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
            "level": self.level,
        }


class DagsmithError(Exception):
    """Base class of every error that dagsmith reports to a user (never a traceback)."""

    exit_code = 2

    def lines(self) -> list[str]:
        return [str(self)]


class DeployFailed(DagsmithError):
    """`dagsmith deploy`: a change failed after others were made, and everything was put back
    (the target is as it was before the command)."""

    exit_code = 1


class DeployIncomplete(DagsmithError):
    """`dagsmith deploy`: a change failed and putting back failed too: the target needs a person."""

    exit_code = 4


# scheme://user:PASSWORD@host: the password is group 1. A password may hold any character ('/',
# '+', ' ', even '@'), so it runs to the LAST '@' of the line: anything else lets a part of it
# through (s3://KEY:ab/cd@bucket). This over-reaches on a line that has an e-mail address after a
# URL with a port, which is the safe side for a secret check.
# What the pattern [A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:([^\r\n]*)@ finds, found in time linear in
# the text: a regular expression backtracks (a run of 100,000 letters took seconds). See
# _UrlPasswordFinder.
class UrlPassword(NamedTuple):
    start: int  # where the scheme starts
    password_start: int
    password_end: int  # the index of the '@' ending it

    def end(self) -> int:
        return self.password_end + 1


_SCHEME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+.-")
_USER = re.compile(r"[^/\s:@]*")
_LINE_END = re.compile(r"[\r\n]")


class _UrlPasswordFinder:
    """Each scan is bounded: the scheme runs back to the previous '://' at most, the user part
    forward to the next ':' at most, and the end of the line and its last '@' are looked up once
    per line. So the whole search is linear in the length of the text."""

    def search(self, text: str, pos: int = 0) -> UrlPassword | None:
        i, n = pos, len(text)
        line_from, line_end, last_at = -1, -1, -1  # the line looked up last: its end and last '@'
        while True:
            j = text.find("://", i)
            if j < 0:
                return None
            k = j
            while k > pos and text[k - 1] in _SCHEME_CHARS:
                k -= 1
            while k < j and not ("A" <= text[k] <= "Z" or "a" <= text[k] <= "z"):
                k += 1
            if k == j:  # no scheme (it must start with a letter)
                i = j + 1
                continue
            colon = _USER.match(text, j + 3).end()
            if colon >= n or text[colon] != ":":
                i = j + 1
                continue
            if not (line_from <= colon + 1 <= line_end):
                line_from = colon + 1
                found = _LINE_END.search(text, line_from)
                line_end = found.start() if found else n
                last_at = text.rfind("@", line_from, line_end)
            if last_at < colon + 1:  # no '@' after it on this line: none after a later '://' either
                i = line_end
                continue
            return UrlPassword(k, colon + 1, last_at)

    def finditer(self, text: str):
        pos = 0
        while (found := self.search(text, pos)) is not None:
            yield found
            pos = found.end()


URL_PASSWORD = _UrlPasswordFinder()
# user:PASSWORD@ without a scheme (postgresql//u:pw@h, u:pw@h/db): only for hiding, never a check.
_BARE_PASSWORD = re.compile(r"(?<![\w.%+-])[\w.%+-]+:([^\s@/:]+)@")


def redact(text: str | None) -> str | None:
    """Hide the password of a URL (scheme://user:PASSWORD@host, or user:PASSWORD@host) before it
    is printed or recorded."""
    if not text:
        return text
    if "://" in text:
        parts, done = [], 0
        for found in URL_PASSWORD.finditer(text):
            parts.append(text[done:found.password_start] + "***@")
            done = found.end()
        text = "".join(parts) + text[done:]
    return _BARE_PASSWORD.sub(lambda m: m.group(0)[: m.start(1) - m.start(0)] + "***@", text)


CONNECTION_PREFIX = "DAGSMITH_CONN_"  # runtime/sources.py's connection_env: where connection values are


def encoded_forms(secret: str) -> set[str]:
    """A secret as a client library or a server may print it: as given, percent-decoded,
    percent-encoded (path and form style), JSON-escaped (also with `\\/`, and as Go's
    encoding/json escapes `&<>`). The one list of forms every scrubber hides."""
    import json
    from urllib.parse import quote, quote_plus, unquote, unquote_plus

    escaped = json.dumps(secret)[1:-1]
    go = escaped.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    return {secret, unquote(secret), unquote_plus(secret), quote(secret, safe=""), quote_plus(secret),
            quote(unquote(secret), safe=""), quote(unquote(secret), safe="/:@"),
            escaped, escaped.replace("/", "\\/"), go}


def _pieces(value: str) -> set[str]:
    """Every part of a URL a client library may print apart from the whole (MLflow prints
    `url: /SecretPath/?token=...` of http://host/SecretPath/?token=...): the userinfo, user and
    password, the path and each of its segments, the query, each of its parameters and values,
    the fragment. Not the host and port, which hold no secret and say what could not be reached;
    a value that is no URL (a database file) is hidden whole."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value) if "://" in value else None
    except ValueError:
        parts = None
    if parts is None:
        return set()
    userinfo = parts.netloc.rpartition("@")[0]
    found = {userinfo, *userinfo.split(":", 1), parts.path, parts.query, parts.fragment}
    if parts.query:
        found |= {f"{parts.path}?{parts.query}", f"?{parts.query}"}
    for pair in re.split(r"[&;]", parts.query):
        found |= {pair, pair.partition("=")[2]}
    found |= set(parts.path.split("/"))
    return {form for piece in found if piece for form in encoded_forms(piece)}


@functools.lru_cache(maxsize=64)
def _hider(value: str):
    """A regex matching the value and its pieces (longest first). A piece shorter than 8
    characters only counts between non-alphanumerics (else "db" would be hidden in "mydb"
    everywhere); a single character is no secret, and hiding it would shred the message."""
    whole = encoded_forms(value)
    alternatives = []
    for piece in sorted((whole | _pieces(value)) - {""}, key=lambda p: (-len(p), p)):
        if len(piece) < 2:
            continue
        text = re.escape(piece)
        if len(piece) < 8:
            text = rf"(?:(?<![A-Za-z0-9])|(?<=%[0-9A-Fa-f]{{2}})){text}(?![A-Za-z0-9])"
        alternatives.append(text)
    return (re.compile("|".join(alternatives)) if alternatives else None), whole


def hide_value(text: str | None, value: str | None, variable: str) -> str | None:
    """`text` (an error of a client library, say) without a connection value or any part of it:
    the whole becomes `$VARIABLE`, each piece `***`; then URL passwords are redacted."""
    if text and value:
        pattern, whole = _hider(value)
        if pattern is not None:
            text = pattern.sub(lambda m: f"${variable}" if m.group(0) in whole else "***", text)
    return redact(text)


def hide_connections(text: str | None, environ=None) -> str | None:
    """`text` without the value of any connection set in the environment (DAGSMITH_CONN_*), nor
    any part of one, nor a URL's password: for every error recorded or shown."""
    if not text:
        return text
    environ = os.environ if environ is None else environ
    for variable, value in sorted(environ.items()):
        if variable.startswith(CONNECTION_PREFIX) and value:
            text = hide_value(text, value, variable)
    return redact(text)


class SpecError(DagsmithError):
    """One or more problems in a spec, each with file:line:column and the spec path.

    Whatever a message quotes from the spec, a URL's password is never printed: every
    diagnostic's path, message and hint are redacted here, the one place they all pass.
    """

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        safe = (Diagnostic(d.mark, redact(d.path), redact(d.message), redact(d.hint), d.level) for d in diagnostics)
        unique = sorted(set(safe), key=lambda d: (d.mark, d.path, d.message))
        self.diagnostics: list[Diagnostic] = unique
        super().__init__("\n".join(d.format() for d in unique))

    def lines(self) -> list[str]:
        return [d.format() for d in self.diagnostics]


class UsageError(DagsmithError):
    """A wrong command-line argument (unknown target, bad --param syntax...)."""


def did_you_mean(word: object, candidates: Iterable[str]) -> str | None:
    """The hint for a misspelling, or None when nothing is close.

    Tries, in order: the same word in another case ('CSV' -> 'csv'), a close spelling
    ('trainig' -> 'training'), and the one candidate the word is the start of ('min' -> 'min_value').
    """
    if not isinstance(word, str) or not word:
        return None
    options = sorted({c for c in candidates if isinstance(c, str) and c != word})
    folded = [c for c in options if c.lower() == word.lower()]
    if folded:
        return f"did you mean '{folded[0]}'?"
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if len(word) >= 3:
        longer = [c for c in options if c.lower().startswith(word.lower())]
        if len(longer) == 1:
            return f"did you mean '{longer[0]}'?"
    return None


def format_path(parts: Iterable[object]) -> str:
    """("validation", 0, "on") -> "validation[0].on"."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            if not text.isprintable():  # a newline in a key must not break the one-line message
                text = repr(text)[1:-1]
            out += f".{text}" if out else text
    return out


def exit_code_of(exc: BaseException, echo) -> int:
    """How a command ends on `exc` (the CLI's and the step launcher's one rule): a DagsmithError's
    lines (connections hidden: a client library's text may quote one) and its exit code; a
    SystemExit's code; any other Exception is a bug, said in one line (its traceback only with
    DAGSMITH_DEBUG=1), exit 3. Anything else (KeyboardInterrupt) is raised again."""
    if isinstance(exc, DagsmithError):
        for line in exc.lines():
            echo(hide_connections(line))
        return exc.exit_code
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    if not isinstance(exc, Exception) or os.environ.get("DAGSMITH_DEBUG"):
        raise exc
    text = hide_connections(f"{type(exc).__name__}: {exc}")
    echo(f"dagsmith: internal error: {text} (set DAGSMITH_DEBUG=1 for the traceback; please report it)")
    return 3
