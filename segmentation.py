"""Stage 1: train the crack segmentation U-Net. See `python segmentation.py --help`."""
import sys

from crackseg.cli.train import run

if __name__ == "__main__":
    sys.exit(run("segmentation"))
