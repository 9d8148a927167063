"""The bottom layer every plugin builds on: the plugin contract and shared value types.

Nothing here imports ``server/``, ``plugins/``, ``metrics/``, ``node/`` or the CLI.
"""
