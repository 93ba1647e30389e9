"""Placeholder until the cache subcommand lands (this session)."""


def register(sub) -> None:
    pass
