"""Stage 2: train the crack / no-crack head on stage 1's frozen encoder. See `python classification.py --help`."""
import sys

from crackseg.cli.train import run

if __name__ == "__main__":
    sys.exit(run("classification"))
