"""Reusable building blocks of the paper's networks."""
from nin.layers.global_avg_pool import GlobalAvgPool
from nin.layers.mlpconv import MLPConv

__all__ = ["GlobalAvgPool", "MLPConv"]
