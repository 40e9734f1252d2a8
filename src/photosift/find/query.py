"""What a search query asks for: words to match, and dates to keep.

A query is free text. Dates in it become a filter, not words: a year (``2023``), a month with or without a
year (``june 2024``, ``Jun``, ``2024-06``), or a day (``2024-06-15``). Several date parts narrow one another
("june 2024" is one month). What is left is split into *terms*, longest first: "golden retriever puppy" is the
class name "golden retriever" and the word "puppy" (a term is whatever the label hierarchy, a class name or a
category knows as a whole; a word nobody knows stays a word and can still match a file or folder name).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

MONTHS = {
    name: i
    for i, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
MAX_TERM_WORDS = 4  # the longest class or category name worth trying as one term
_DAY = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?$")
_YEAR = re.compile(r"^(1[89]\d\d|2[01]\d\d)$")


@dataclass(frozen=True)
class DateFilter:
    """Taken in ``year`` (and ``month``, and ``day``); a month alone means that month in any year."""

    year: int | None = None
    month: int | None = None
    day: int | None = None

    def prefix(self) -> str | None:
        """The ISO prefix every matching ``taken_at`` starts with, when the year is known."""
        if self.year is None:
            return None
        text = f"{self.year:04d}"
        if self.month is not None:
            text += f"-{self.month:02d}"
            if self.day is not None:
                text += f"-{self.day:02d}"
        return text

    def describe(self) -> str:
        import calendar

        parts = []
        if self.day is not None:
            parts.append(str(self.day))
        if self.month is not None:
            parts.append(calendar.month_name[self.month])
        if self.year is not None:
            parts.append(str(self.year))
        return " ".join(parts)


@dataclass
class Query:
    text: str
    terms: list[str] = field(default_factory=list)
    date: DateFilter | None = None

    @property
    def empty(self) -> bool:
        return not self.terms and self.date is None


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[\s,;]+", text.strip()) if w]


def _take_date(words: list[str]) -> tuple[list[str], DateFilter | None]:
    """The words that are not dates, and the date they spell (None when there is none)."""
    year = month = day = None
    rest = []
    for word in words:
        low = word.lower().strip(".")
        if m := _DAY.match(low):
            y, mo = int(m[1]), int(m[2])
            if 1 <= mo <= 12:
                year, month = y, mo
                if m[3] is not None and 1 <= int(m[3]) <= 31:
                    day = int(m[3])
                continue
        if _YEAR.match(low):
            year = int(low)
            continue
        if low in MONTHS and not (low == "may" and len(words) == 1):  # "may" alone is more likely a word
            month = MONTHS[low]
            continue
        rest.append(word)
    if year is None and month is None:
        return rest, None
    return rest, DateFilter(year, month, day)


def parse(text: str, known: Callable[[str], bool]) -> Query:
    """Split ``text`` into a date filter and terms; ``known(term)`` says whether a run of words is one term."""
    rest, date = _take_date(_words(text))
    terms: list[str] = []
    i = 0
    while i < len(rest):
        for n in range(min(MAX_TERM_WORDS, len(rest) - i), 0, -1):
            candidate = " ".join(rest[i : i + n])
            if n == 1 or known(candidate):
                terms.append(candidate)
                i += n
                break
    return Query(text, terms, date)
