"""crackseg: two-stage crack segmentation (U-Net) with a crack / no-crack gate (UNetClassifier)."""
from crackseg.models import UNet, UNetClassifier, VGGEncoderClassifier

__all__ = ["UNet", "UNetClassifier", "VGGEncoderClassifier"]
__version__ = "0.1.0"
