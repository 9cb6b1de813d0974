"""Models of the experiments (flax linen): CIFAR ResNets, deep autoencoders, a small MLP, the MNIST-1D CNN,
a character-level transformer."""

from experiments.models.autoencoder import ARCHITECTURES
from experiments.models.autoencoder import DeepAutoencoder
from experiments.models.autoencoder import sparse_init
from experiments.models.mlp import MLP
from experiments.models.resnet import CifarResNet
from experiments.models.resnet import blocks_per_stage
from experiments.models.resnet import option_a_shortcut
from experiments.models.signal_cnn import SignalCNN
from experiments.models.transformer import CharTransformer

__all__ = ("ARCHITECTURES", "CharTransformer", "CifarResNet", "DeepAutoencoder", "MLP", "SignalCNN", "blocks_per_stage",
           "option_a_shortcut", "sparse_init")
