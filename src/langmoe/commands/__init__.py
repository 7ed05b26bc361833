"""CLI subcommands, one module each (see langmoe.cli)."""
