"""The torch classes the torch adapter handles, by name (no torch import)."""

from __future__ import annotations

__all__ = ["CONTAINERS", "STANDARD_LAYERS", "TENSOR_TYPES"]

_NN = "torch.nn.modules."
#: standard layers rebuilt from their recorded constructor arguments (exact classes)
STANDARD_LAYERS: tuple[str, ...] = tuple(
    _NN + n
    for n in (
        "linear.Linear",
        "linear.Bilinear",
        "linear.Identity",
        "conv.Conv1d",
        "conv.Conv2d",
        "conv.Conv3d",
        "conv.ConvTranspose1d",
        "conv.ConvTranspose2d",
        "batchnorm.BatchNorm1d",
        "batchnorm.BatchNorm2d",
        "batchnorm.BatchNorm3d",
        "normalization.LayerNorm",
        "normalization.GroupNorm",
        "instancenorm.InstanceNorm1d",
        "instancenorm.InstanceNorm2d",
        "sparse.Embedding",
        "dropout.Dropout",
        "dropout.Dropout1d",
        "dropout.Dropout2d",
        "dropout.AlphaDropout",
        "activation.ReLU",
        "activation.LeakyReLU",
        "activation.ELU",
        "activation.GELU",
        "activation.SELU",
        "activation.SiLU",
        "activation.Sigmoid",
        "activation.Tanh",
        "activation.Softmax",
        "activation.LogSoftmax",
        "activation.Softplus",
        "activation.Hardtanh",
        "activation.PReLU",
        "activation.MultiheadAttention",
        "flatten.Flatten",
        "flatten.Unflatten",
        "pooling.MaxPool1d",
        "pooling.MaxPool2d",
        "pooling.AvgPool1d",
        "pooling.AvgPool2d",
        "pooling.AdaptiveAvgPool1d",
        "pooling.AdaptiveAvgPool2d",
        "rnn.RNN",
        "rnn.LSTM",
        "rnn.GRU",
    )
)
#: containers: rebuilt from their children
CONTAINERS: tuple[str, ...] = (
    _NN + "container.Sequential",
    _NN + "container.ModuleList",
    _NN + "container.ModuleDict",
)
TENSOR_TYPES = ("torch.Tensor", "torch.nn.parameter.Parameter")
