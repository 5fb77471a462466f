"""`python -m crackseg` is the `crackseg` command."""
import sys

from crackseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
