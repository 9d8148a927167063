"""Parse the ``template`` directive (CoreDNS plugin/template/setup.go, v1.14).

::

    template CLASS TYPE [ZONE...] {
        match REGEX...
        answer|additional|authority RR...
        rcode CODE
        ederror CODE [REASON]
        fallthrough [ZONE...]
    }

Every ``template`` directive of a server block is one template of a single handler, tried in file order
(CoreDNS builds one handler from all of them): use :func:`parse_all` for a block, :func:`parse` for one.
``var``/``expr`` (expr-lang conditions) exist only on CoreDNS's development branch, after v1.14.7; they
are refused with a clear message rather than ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nodelocaldns.core.zones import is_subdomain
from nodelocaldns.corefile.keys import normalize_zones
from nodelocaldns.corefile.model import Directive
from nodelocaldns.corefile.re2 import PatternError, compile_re2
from nodelocaldns.dns.names import class_from_text, rcode_from_text, type_from_text
from nodelocaldns.plugins.template import gotemplate
from nodelocaldns.plugins.template.gotemplate import Template

SECTIONS = ("answer", "additional", "authority")
CLASS_ANY = 255
TYPE_ANY = 255
RCODE_SERVFAIL = 2
_MATCH_ALL = ".*"


@dataclass(frozen=True, slots=True)
class Regex:
    source: str  # as written in the Corefile (the Go regex.String())
    compiled: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class TemplateRule:
    """One ``template`` directive."""

    qclass: int
    qtype: int
    zones: tuple[str, ...]
    regexes: tuple[Regex, ...]
    answer: tuple[Template, ...] = ()
    additional: tuple[Template, ...] = ()
    authority: tuple[Template, ...] = ()
    rcode: int = 0
    ederror: tuple[int, str] | None = None
    fallthrough: tuple[str, ...] | None = None  # None: no fallthrough; ("." ,): all names
    filename: str = "Corefile"
    line: int = 0

    def falls_through(self, name: str) -> bool:
        """CoreDNS ``fall.F.Through``."""
        return self.fallthrough is not None and any(is_subdomain(z, name) for z in self.fallthrough)


@dataclass(frozen=True, slots=True)
class TemplateConfig:
    """All ``template`` directives of one server block: one handler, its templates in order."""

    templates: tuple[TemplateRule, ...]

    @property
    def zones(self) -> tuple[str, ...]:
        """The handler's zones: every template's zones (queries outside them skip the plugin)."""
        return tuple(z for t in self.templates for z in t.zones)


def _one(sub: Directive, what: str) -> str:
    if len(sub.args) != 1:
        raise sub.error(f"{sub.name} takes exactly one {what}, got {len(sub.args)} arguments")
    return sub.args[0]


def parse(d: Directive, server_zones: Sequence[str] = (".",)) -> TemplateRule:
    """One ``template`` directive; ``server_zones`` are its server block's zones (the default ZONE)."""
    if len(d.args) < 2:
        raise d.error("template takes CLASS TYPE [ZONE...]")
    qclass = class_from_text(d.args[0])
    if qclass is None:
        raise d.error(f"invalid query class {d.args[0]}")
    qtype = type_from_text(d.args[1])
    if qtype is None:
        raise d.error(f"invalid RR type {d.args[1]}")
    zones = tuple(normalize_zones(d.args[2:], d)) if len(d.args) > 2 else tuple(server_zones)
    regexes: list[Regex] = []
    sections: dict[str, list[Template]] = {s: [] for s in SECTIONS}
    rcode = 0
    ederror: tuple[int, str] | None = None
    fallthrough: tuple[str, ...] | None = None
    for sub in d.block:
        if sub.block:
            raise sub.error(f"{sub.name} does not take a block")
        if sub.name == "match":
            if not sub.args:
                raise sub.error("match takes REGEX...")
            for pattern in sub.args:
                try:
                    regexes.append(Regex(pattern, compile_re2(pattern)))
                except PatternError as exc:
                    raise sub.error(f"could not parse regex: {pattern}, {exc}") from None
        elif sub.name in SECTIONS:
            if not sub.args:
                raise sub.error(f"{sub.name} takes RR...")
            for text in sub.args:
                try:
                    sections[sub.name].append(gotemplate.parse(text, sub.name))
                except gotemplate.TemplateSyntaxError as exc:
                    raise sub.error(f"could not compile template: {text}, {exc}") from None
        elif sub.name == "rcode":
            word = _one(sub, "CODE")
            code = rcode_from_text(word)
            if code is None:
                raise sub.error(f"unknown rcode {word}")
            rcode = code
        elif sub.name == "ederror":
            if len(sub.args) not in (1, 2):
                raise sub.error("ederror takes EXTENDED_ERROR_CODE [EXTRA_REASON]")
            if not sub.args[0].isdigit() or int(sub.args[0]) > 0xFFFF:
                raise sub.error(f"error parsing extended DNS error code {sub.args[0]}: want 0-65535")
            ederror = (int(sub.args[0]), sub.args[1] if len(sub.args) == 2 else "")
        elif sub.name == "fallthrough":
            fallthrough = tuple(normalize_zones(sub.args, sub)) if sub.args else (".",)
        elif sub.name == "upstream":
            pass  # accepted and ignored, as in CoreDNS ("remove soon")
        elif sub.name in ("var", "expr"):
            raise sub.error(
                f"{sub.name} is not supported: it exists only in CoreDNS after v1.14.7 (expr-lang expressions)"
            )
        else:
            raise sub.error(f"unknown property {sub.name!r} in template")
    if not regexes:
        regexes.append(Regex(_MATCH_ALL, re.compile(_MATCH_ALL, re.ASCII)))
    return TemplateRule(
        qclass=qclass,
        qtype=qtype,
        zones=zones,
        regexes=tuple(regexes),
        answer=tuple(sections["answer"]),
        additional=tuple(sections["additional"]),
        authority=tuple(sections["authority"]),
        rcode=rcode,
        ederror=ederror,
        fallthrough=fallthrough,
        filename=d.filename,
        line=d.line,
    )


def parse_all(directives: Iterable[Directive], server_zones: Sequence[str] = (".",)) -> TemplateConfig:
    """Every ``template`` directive of a server block, in file order."""
    return TemplateConfig(tuple(parse(d, server_zones) for d in directives))
