"""The rewrite plugin, sans I/O (CoreDNS plugin/rewrite rewrite.go ``ServeDNS``, reverter.go).

:func:`rewrite_query` runs the rule list over a query and returns the query to pass on plus a
:class:`Reverter` for its reply. CoreDNS's rules, exactly:

* rules run in order; each sees the query as the rules before it left it. A rule that matched
  (``RewriteDone``) adds its response rules; if it is a ``stop`` rule (the default) the list ends there.
* the reply is reverted (question restored, response rules applied) when a ``stop`` rule matched, or
  when the list ran out with at least one response rule collected. Otherwise it is passed through as
  it is, even if a ``continue`` rule changed the question (CoreDNS hands the next plugin its original
  writer in that case).
* a name that is not a valid domain name after a rewrite answers SERVFAIL (:class:`RewriteFailed`).
* response rules are applied per record, authority then answer then additional, the last collected
  first; rcode rules also run once for a reply with no records at all.

A ``cname`` rule needs the new CNAME target resolved: :meth:`Reverter.cname_lookups` says which
(name, qtype) the revert asks for; the caller resolves them (through the server's own chain, as
CoreDNS's ``upstream`` does) and passes the replies to :meth:`Reverter.revert`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dns.name

from nodelocaldns.dns.msg import Msg, Question, from_wire
from nodelocaldns.errors import WireError
from nodelocaldns.plugins.rewrite.rules import STOP, NameRule, Peer, RcodeResponse, Reply, ResponseRule, State
from nodelocaldns.plugins.rewrite.setup import RewriteConfig, Rule


class RewriteFailed(WireError):
    """The rewritten name is not a valid domain name: CoreDNS answers SERVFAIL."""

    rcode = 2


@dataclass(slots=True)
class Reverter:
    """Turns the reply to a rewritten query back into the reply to the client's query."""

    original: Question | None = None
    rules: list[ResponseRule] = field(default_factory=list)
    active: bool = False

    def revert(self, reply_wire: bytes, lookups: Mapping[tuple[str, int], bytes] | None = None) -> bytes:
        """The reply the client gets. ``lookups`` answers the names :meth:`cname_lookups` listed."""
        if not self.active or self.original is None:
            return reply_wire
        msg = from_wire(reply_wire)
        parsed = {k: from_wire(v) for k, v in (lookups or {}).items()}
        self._apply(msg, lambda name, qtype: parsed.get((name, qtype)))
        return msg.to_wire()

    def cname_lookups(self, reply_wire: bytes) -> tuple[tuple[str, int], ...]:
        """The (target, qtype) lookups a ``cname`` rule will ask for when reverting this reply."""
        if not self.active or not self.rules:
            return ()
        asked: list[tuple[str, int]] = []

        def record(name: str, qtype: int) -> Msg | None:
            asked.append((name, qtype))
            return None

        self._apply(from_wire(reply_wire), record)
        return tuple(dict.fromkeys(asked))

    def _apply(self, msg: Msg, lookup: object) -> None:
        assert self.original is not None
        q = Question(self.original.name, self.original.qtype, self.original.qclass)
        if msg.question:
            msg.question[0] = q
        else:
            msg.question = [q]
        if not self.rules:
            return
        reply = Reply(msg, lookup)  # type: ignore[arg-type]
        # Go ranges over each section as it was when the loop began, even if a rule replaces it.
        records = [*msg.authority, *msg.answer, *msg.additional]
        for rr in records:
            for rule in reversed(self.rules):
                rule.apply(reply, rr)
        if not records:
            for rule in reversed(self.rules):
                if isinstance(rule, RcodeResponse):
                    rule.apply(reply, None)


def _valid(text: str) -> dns.name.Name | None:
    if not text.endswith("."):
        return None  # a relative name cannot be sent on (miekg: "domain must be fully qualified")
    try:
        return dns.name.from_text(text)
    except (dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel, dns.name.BadEscape, ValueError):
        return None


def rewrite_query(
    cfg: RewriteConfig | Sequence[Rule], query_wire: bytes, peer: Peer | None = None
) -> tuple[bytes, Reverter]:
    """Apply the rules to a query. Returns the query to pass on (the same bytes object when nothing
    changed) and the reverter for its reply. Raises RewriteFailed (SERVFAIL) for an invalid new name,
    WireError for a query that does not parse."""
    rules = cfg.rules if isinstance(cfg, RewriteConfig) else tuple(cfg)
    msg = from_wire(query_wire)
    if not msg.question or not rules:
        return query_wire, Reverter()
    first = msg.question[0]
    original = Question(first.name, first.qtype, first.qclass)
    state = State(msg, peer or Peer())
    reverter = Reverter(original)
    stopped = False
    for rule in rules:
        if isinstance(rule, NameRule):
            resp, done, new = rule.apply(state)
            if done and new is not None:
                name = _valid(new)
                if name is None:
                    raise RewriteFailed(f"invalid name after rewrite: {new}")
                state.question.name = name
                state.dirty = True
        else:
            resp, done = rule.apply(state)
        if done:
            reverter.rules.extend(resp)
            if rule.mode == STOP:
                stopped = True
                break
    reverter.active = stopped or bool(reverter.rules)
    return (msg.to_wire() if state.dirty else query_wire), reverter
