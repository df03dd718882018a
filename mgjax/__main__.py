"""`python -m mgjax …` = the `mgjax` command."""

from .cli import main

main()
