"""``python -m rmis`` runs the command line."""

from rmis.cli import main

main()
