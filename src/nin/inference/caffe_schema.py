"""The part of Caffe's ``caffe.proto`` that reading a ``.caffemodel`` needs, built with the protobuf runtime.

No Caffe install and no ``protoc`` is needed: the message types are described here as data and turned
into classes by ``google.protobuf`` at import. Every message, field name and field number is the one
of ``src/caffe/proto/caffe.proto`` in BVLC/caffe at commit
``9b891540183ddc834a02b2bd81b31afae71b2153`` (2020-02-13, the last commit on master); the fields used
here kept their numbers since 2014, so the model-zoo files of that year parse with it. Fields a
``.caffemodel`` may hold that are not listed (data, loss and solver settings, other layers' params)
are kept by protobuf as unknown fields and ignored.

Covered: ``NetParameter`` with both ``layer`` (``LayerParameter``, 2015 on) and the old ``layers``
(``V1LayerParameter``, the 2014 files, with the older still ``V0LayerParameter`` nested in it),
``BlobProto`` with the 4-d ``num``/``channels``/``height``/``width`` and the N-d ``shape``
(``BlobShape``), and the parameters of the layers a NIN has: ``ConvolutionParameter`` (with its
``FillerParameter``), ``PoolingParameter``, ``ReLUParameter`` and ``DropoutParameter``.
The classes live in a private descriptor pool, so importing Caffe's own ``caffe_pb2`` alongside is safe.
"""
from __future__ import annotations

from typing import Any

from nin.errors import NinError


class MissingProtobufError(NinError, ImportError):
    """Reading Caffe files needs the optional protobuf package."""


try:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
except ImportError as err:  # pragma: no cover - depends on the environment
    raise MissingProtobufError("reading Caffe files needs the protobuf package: "
                               "pip install 'network-in-network[caffe]' "
                               "(or pip install protobuf)") from err

CAFFE_PROTO_COMMIT = "9b891540183ddc834a02b2bd81b31afae71b2153"
CAFFE_PROTO_URL = f"https://github.com/BVLC/caffe/blob/{CAFFE_PROTO_COMMIT}/src/caffe/proto/caffe.proto"

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"float": _F.TYPE_FLOAT, "double": _F.TYPE_DOUBLE, "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64,
            "uint32": _F.TYPE_UINT32, "bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING}

# message name -> (fields, nested enums). A field: (label, type, name, number[, default][, "packed"]);
# a type that is not a scalar names a message or an enum of this file ("Message" or "Message.Enum").
_V1_LAYER_TYPES = [
    ("NONE", 0), ("ABSVAL", 35), ("ACCURACY", 1), ("ARGMAX", 30), ("BNLL", 2), ("CONCAT", 3),
    ("CONTRASTIVE_LOSS", 37), ("CONVOLUTION", 4), ("DATA", 5), ("DECONVOLUTION", 39), ("DROPOUT", 6),
    ("DUMMY_DATA", 32), ("EUCLIDEAN_LOSS", 7), ("ELTWISE", 25), ("EXP", 38), ("FLATTEN", 8), ("HDF5_DATA", 9),
    ("HDF5_OUTPUT", 10), ("HINGE_LOSS", 28), ("IM2COL", 11), ("IMAGE_DATA", 12), ("INFOGAIN_LOSS", 13),
    ("INNER_PRODUCT", 14), ("LRN", 15), ("MEMORY_DATA", 29), ("MULTINOMIAL_LOGISTIC_LOSS", 16), ("MVN", 34),
    ("POOLING", 17), ("POWER", 26), ("RELU", 18), ("SIGMOID", 19), ("SIGMOID_CROSS_ENTROPY_LOSS", 27),
    ("SILENCE", 36), ("SOFTMAX", 20), ("SOFTMAX_LOSS", 21), ("SPLIT", 22), ("SLICE", 33), ("TANH", 23),
    ("WINDOW_DATA", 24), ("THRESHOLD", 31),
]
_POOL_METHOD = [("MAX", 0), ("AVE", 1), ("STOCHASTIC", 2)]

_MESSAGES: dict[str, tuple[list[tuple[Any, ...]], dict[str, list[tuple[str, int]]]]] = {
    "BlobShape": ([("repeated", "int64", "dim", 1, None, "packed")], {}),
    "BlobProto": ([
        ("optional", "BlobShape", "shape", 7),
        ("repeated", "float", "data", 5, None, "packed"),
        ("repeated", "float", "diff", 6, None, "packed"),
        ("repeated", "double", "double_data", 8, None, "packed"),
        ("repeated", "double", "double_diff", 9, None, "packed"),
        ("optional", "int32", "num", 1, "0"),
        ("optional", "int32", "channels", 2, "0"),
        ("optional", "int32", "height", 3, "0"),
        ("optional", "int32", "width", 4, "0"),
    ], {}),
    "FillerParameter": ([
        ("optional", "string", "type", 1, "constant"),
        ("optional", "float", "value", 2, "0"),
        ("optional", "float", "min", 3, "0"),
        ("optional", "float", "max", 4, "1"),
        ("optional", "float", "mean", 5, "0"),
        ("optional", "float", "std", 6, "1"),
        ("optional", "int32", "sparse", 7, "-1"),
    ], {}),
    "NetParameter": ([
        ("optional", "string", "name", 1),
        ("repeated", "string", "input", 3),
        ("repeated", "int32", "input_dim", 4),
        ("repeated", "LayerParameter", "layer", 100),
        ("repeated", "V1LayerParameter", "layers", 2),
    ], {}),
    "LayerParameter": ([
        ("optional", "string", "name", 1),
        ("optional", "string", "type", 2),
        ("repeated", "string", "bottom", 3),
        ("repeated", "string", "top", 4),
        ("repeated", "BlobProto", "blobs", 7),
        ("optional", "ConvolutionParameter", "convolution_param", 106),
        ("optional", "DropoutParameter", "dropout_param", 108),
        ("optional", "PoolingParameter", "pooling_param", 121),
        ("optional", "ReLUParameter", "relu_param", 123),
    ], {}),
    "ConvolutionParameter": ([
        ("optional", "uint32", "num_output", 1),
        ("optional", "bool", "bias_term", 2, "true"),
        ("repeated", "uint32", "pad", 3),
        ("repeated", "uint32", "kernel_size", 4),
        ("repeated", "uint32", "stride", 6),
        ("repeated", "uint32", "dilation", 18),
        ("optional", "uint32", "pad_h", 9, "0"),
        ("optional", "uint32", "pad_w", 10, "0"),
        ("optional", "uint32", "kernel_h", 11),
        ("optional", "uint32", "kernel_w", 12),
        ("optional", "uint32", "stride_h", 13),
        ("optional", "uint32", "stride_w", 14),
        ("optional", "uint32", "group", 5, "1"),
        ("optional", "FillerParameter", "weight_filler", 7),
        ("optional", "FillerParameter", "bias_filler", 8),
    ], {}),
    "DropoutParameter": ([("optional", "float", "dropout_ratio", 1, "0.5")], {}),
    "PoolingParameter": ([
        ("optional", "PoolingParameter.PoolMethod", "pool", 1, "MAX"),
        ("optional", "uint32", "pad", 4, "0"),
        ("optional", "uint32", "pad_h", 9, "0"),
        ("optional", "uint32", "pad_w", 10, "0"),
        ("optional", "uint32", "kernel_size", 2),
        ("optional", "uint32", "kernel_h", 5),
        ("optional", "uint32", "kernel_w", 6),
        ("optional", "uint32", "stride", 3, "1"),
        ("optional", "uint32", "stride_h", 7),
        ("optional", "uint32", "stride_w", 8),
        ("optional", "bool", "global_pooling", 12, "false"),
        ("optional", "PoolingParameter.RoundMode", "round_mode", 13, "CEIL"),
    ], {"PoolMethod": _POOL_METHOD, "RoundMode": [("CEIL", 0), ("FLOOR", 1)]}),
    "ReLUParameter": ([("optional", "float", "negative_slope", 1, "0")], {}),
    "V1LayerParameter": ([
        ("repeated", "string", "bottom", 2),
        ("repeated", "string", "top", 3),
        ("optional", "string", "name", 4),
        ("optional", "V1LayerParameter.LayerType", "type", 5),
        ("repeated", "BlobProto", "blobs", 6),
        ("repeated", "float", "blobs_lr", 7),
        ("repeated", "float", "weight_decay", 8),
        ("optional", "ConvolutionParameter", "convolution_param", 10),
        ("optional", "DropoutParameter", "dropout_param", 12),
        ("optional", "PoolingParameter", "pooling_param", 19),
        ("optional", "ReLUParameter", "relu_param", 30),
        ("optional", "V0LayerParameter", "layer", 1),
    ], {"LayerType": _V1_LAYER_TYPES}),
    "V0LayerParameter": ([
        ("optional", "string", "name", 1),
        ("optional", "string", "type", 2),
        ("optional", "uint32", "num_output", 3),
        ("optional", "bool", "biasterm", 4, "true"),
        ("optional", "FillerParameter", "weight_filler", 5),
        ("optional", "FillerParameter", "bias_filler", 6),
        ("optional", "uint32", "pad", 7, "0"),
        ("optional", "uint32", "kernelsize", 8),
        ("optional", "uint32", "group", 9, "1"),
        ("optional", "uint32", "stride", 10, "1"),
        ("optional", "V0LayerParameter.PoolMethod", "pool", 11, "MAX"),
        ("optional", "float", "dropout_ratio", 12, "0.5"),
        ("repeated", "BlobProto", "blobs", 50),
        ("repeated", "float", "blobs_lr", 51),
        ("repeated", "float", "weight_decay", 52),
    ], {"PoolMethod": _POOL_METHOD}),
}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    enums = {f"{msg}.{enum}" for msg, (_, nested) in _MESSAGES.items() for enum in nested}
    file = descriptor_pb2.FileDescriptorProto(name="nin_caffe_subset.proto", package="caffe", syntax="proto2")
    for msg_name, (fields, nested) in _MESSAGES.items():
        msg = file.message_type.add(name=msg_name)
        for enum_name, values in nested.items():
            enum = msg.enum_type.add(name=enum_name)
            for value_name, number in values:
                enum.value.add(name=value_name, number=number)
        for label, kind, name, number, *rest in fields:
            default = rest[0] if rest else None
            field = msg.field.add(name=name, number=number,
                                  label=_F.LABEL_REPEATED if label == "repeated" else _F.LABEL_OPTIONAL)
            if kind in _SCALARS:
                field.type = _SCALARS[kind]
            else:
                field.type = _F.TYPE_ENUM if kind in enums else _F.TYPE_MESSAGE
                field.type_name = f".caffe.{kind}"
            if default is not None:
                field.default_value = default
            if "packed" in rest:
                field.options.packed = True
    return file


def _build() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(_file_descriptor().SerializeToString())
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is None:  # protobuf < 4.21
        factory = message_factory.MessageFactory(pool)
        get_class = factory.GetPrototype
    return {name: get_class(pool.FindMessageTypeByName(f"caffe.{name}")) for name in _MESSAGES}


_CLASSES = _build()
BlobShape = _CLASSES["BlobShape"]
BlobProto = _CLASSES["BlobProto"]
FillerParameter = _CLASSES["FillerParameter"]
NetParameter = _CLASSES["NetParameter"]
LayerParameter = _CLASSES["LayerParameter"]
ConvolutionParameter = _CLASSES["ConvolutionParameter"]
DropoutParameter = _CLASSES["DropoutParameter"]
PoolingParameter = _CLASSES["PoolingParameter"]
ReLUParameter = _CLASSES["ReLUParameter"]
V1LayerParameter = _CLASSES["V1LayerParameter"]
V0LayerParameter = _CLASSES["V0LayerParameter"]

__all__ = ["CAFFE_PROTO_COMMIT", "CAFFE_PROTO_URL", "BlobProto", "BlobShape", "ConvolutionParameter",
           "DropoutParameter", "FillerParameter", "LayerParameter", "NetParameter", "PoolingParameter",
           "ReLUParameter", "V0LayerParameter", "V1LayerParameter"]
