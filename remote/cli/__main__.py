"""`python -m remote.cli`: the same entry point as the `remotectl` console script."""

from remote.cli import main

main()
