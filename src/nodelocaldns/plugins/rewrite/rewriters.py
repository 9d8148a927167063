"""String rewriters: how name and value response rules map a name back."""

from __future__ import annotations

import re
from dataclasses import dataclass


def substitute(template: str, groups: tuple[str, ...]) -> str:
    """Replace ``{0}``, ``{1}``... with the regex groups, in CoreDNS's order (group 0 first)."""
    for i, g in enumerate(groups):
        template = template.replace("{" + str(i) + "}", g)
    return template


def _groups(m: re.Match[str]) -> tuple[str, ...]:
    return (m.group(0), *(g or "" for g in m.groups()))


@dataclass(frozen=True, slots=True)
class RegexRewriter:
    pattern: re.Pattern[str]
    replacement: str

    def rewrite(self, src: str) -> str:
        m = self.pattern.search(src)
        return src if m is None else substitute(self.replacement, _groups(m))


@dataclass(frozen=True, slots=True)
class RemapRewriter:
    """Maps a name, and any name below it, back (``answer auto``)."""

    orig: str
    replacement: str

    def rewrite(self, src: str) -> str:
        if src == self.orig:
            return self.replacement
        i = len(src) - len(self.orig)
        if i > 0 and src[i - 1] == "." and src[i:] == self.orig:
            return src[:i] + self.replacement
        return src


@dataclass(frozen=True, slots=True)
class SuffixRewriter:
    suffix: str
    replacement: str

    def rewrite(self, src: str) -> str:
        if src.endswith(self.suffix):
            return src[: len(src) - len(self.suffix)] + self.replacement
        return src


StringRewriter = RegexRewriter | RemapRewriter | SuffixRewriter
