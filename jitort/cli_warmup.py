"""Placeholder until the warmup subcommand lands (this session)."""


def register(sub) -> None:
    pass
