"""`python -m scheduler.cli` is the same as the `corral` command."""

from scheduler.cli.app import main

main()
