"""Models: the ResNet50 backbone (two weight layouts), its input normalisation, the paper's head."""

from ichflax.models import preprocess
from ichflax.models.backbones import BACKBONES
from ichflax.models.batchnorm import BatchNorm
from ichflax.models.classifier import Classifier, build_classifier, reseed, trainable_filter
from ichflax.models.head import Head
from ichflax.models.resnet import FEATURES, VARIANTS, ResNet50

__all__ = [
           "BACKBONES",
           "FEATURES",
           "VARIANTS",
           "BatchNorm",
           "Classifier",
           "Head",
           "ResNet50",
           "build_classifier",
           "preprocess",
           "reseed",
           "trainable_filter",
]
