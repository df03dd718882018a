"""`python -m mgjax …` = the `mgjax` command."""

from .app.cli import main

main()
