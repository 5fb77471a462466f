"""Networks: U-Net parts, the classifier head and the gated combination."""
from crackseg.models.classifier import ClassifierHead, VGGEncoderClassifier
from crackseg.models.gated import UNetClassifier
from crackseg.models.parts import VGGBlock
from crackseg.models.unet import Decoder, UNet, VGGEncoder

__all__ = ["ClassifierHead", "Decoder", "UNet", "UNetClassifier", "VGGBlock", "VGGEncoder", "VGGEncoderClassifier"]
