"""Shared value types parsed the same way everywhere (Go durations, host:port). Imports nothing
from the rest of the package, so plugins, the server and the node agent may all use it."""
