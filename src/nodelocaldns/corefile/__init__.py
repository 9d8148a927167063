"""Corefile text -> ServerBlock/Directive model, every piece carrying file:line."""

from nodelocaldns.corefile.keys import (
    normalize_zone,
    normalize_zones,
    origins_from_args_or_block,
    parse_server_key,
    reverse_zones,
)
from nodelocaldns.corefile.model import Directive, ServerBlock, ServerKey
from nodelocaldns.corefile.parser import parse_corefile, tokenize

__all__ = [
    "Directive",
    "ServerBlock",
    "ServerKey",
    "normalize_zone",
    "normalize_zones",
    "origins_from_args_or_block",
    "parse_corefile",
    "parse_server_key",
    "reverse_zones",
    "tokenize",
]
