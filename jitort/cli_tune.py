"""Placeholder until the tune subcommand lands (this session)."""


def register(sub) -> None:
    pass
