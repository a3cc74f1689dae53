"""`python -m tasks.cli`: the same as the `account-router` console script."""

from tasks.cli import main

main()
