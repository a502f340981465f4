"""Reusable building blocks of the paper's networks."""
from nin.layers.dropout import CudaConvnetDropout, PackedDropout, dropout_layer
from nin.layers.global_avg_pool import GlobalAvgPool
from nin.layers.locally_connected import LocallyConnected2d
from nin.layers.mlpconv import MLPConv
from nin.layers.response_norm import SpatialResponseNorm

__all__ = ["CudaConvnetDropout", "GlobalAvgPool", "LocallyConnected2d", "MLPConv", "PackedDropout",
           "SpatialResponseNorm", "dropout_layer"]
