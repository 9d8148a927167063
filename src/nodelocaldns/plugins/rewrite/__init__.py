"""The ``rewrite`` plugin: rewrites queries before the rest of the chain and reverts their replies."""
