"""Placeholder until the bench subcommand lands (this session)."""


def register(sub) -> None:
    pass
