"""TensorProto <-> numpy for the request path.

A request is admitted on its declared dtype and shape (`declared`, nothing
allocated), and only then decoded (`to_numpy`), which insists that the values
present fill the declared shape exactly: TensorFlow's own converters pad a
single typed value to any declared shape, so a few-byte proto could make the
server allocate gigabytes.

tf.make_tensor_proto / tf.make_ndarray cost ~30-50 us per tensor; plain
numeric tensors are just shape + raw little-endian bytes (`tensor_content`),
which this converts directly (~5 us). Anything else (strings, half floats,
complex) goes through TensorFlow's converter once its size is checked.
"""
import collections
import math

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from tf_genrec.serving.errors import invalid

_FAST_DTYPES = {np.dtype(t): tf.as_dtype(t).as_datatype_enum for t in (
    np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
    np.uint64, np.float32, np.float64, np.bool_)}
_FAST_ENUMS = {enum: dtype for dtype, enum in _FAST_DTYPES.items()}
# dtype -> (typed value field, values per element); other dtypes are refused.
_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: ("float_val", 1),
    types_pb2.DT_DOUBLE: ("double_val", 1),
    types_pb2.DT_INT8: ("int_val", 1),
    types_pb2.DT_INT16: ("int_val", 1),
    types_pb2.DT_INT32: ("int_val", 1),
    types_pb2.DT_UINT8: ("int_val", 1),
    types_pb2.DT_UINT16: ("int_val", 1),
    types_pb2.DT_INT64: ("int64_val", 1),
    types_pb2.DT_UINT32: ("uint32_val", 1),
    types_pb2.DT_UINT64: ("uint64_val", 1),
    types_pb2.DT_BOOL: ("bool_val", 1),
    types_pb2.DT_HALF: ("half_val", 1),
    types_pb2.DT_BFLOAT16: ("half_val", 1),
    types_pb2.DT_STRING: ("string_val", 1),
    types_pb2.DT_COMPLEX64: ("scomplex_val", 2),
    types_pb2.DT_COMPLEX128: ("dcomplex_val", 2),
}

# What a request declares for one input, before any value is decoded.
Declared = collections.namedtuple("Declared", "dtype shape")


def declared(proto, name="tensor"):
  """The dtype and shape a TensorProto declares; INVALID_ARGUMENT if they
  cannot describe a tensor (unknown rank, negative dims, unsupported dtype)."""
  if proto.dtype not in _VALUE_FIELDS:
    known = proto.dtype in types_pb2.DataType.values()
    raise invalid(f"input '{name}': dtype "
                  f"{types_pb2.DataType.Name(proto.dtype) if known else proto.dtype}"
                  f" is not supported in requests")
  if proto.tensor_shape.unknown_rank:
    raise invalid(f"input '{name}': tensor_shape has unknown_rank set")
  shape = tuple(d.size for d in proto.tensor_shape.dim)
  for axis, size in enumerate(shape):
    if size < 0:
      raise invalid(f"input '{name}': tensor_shape.dim[{axis}].size={size} "
                    f"is negative")
  if math.prod(d for d in shape if d) >= 1 << 62:  # Even if a dim is 0.
    raise invalid(f"input '{name}': shape {list(shape)} describes 2^62 or "
                  f"more elements")
  dtype = tf.as_dtype(proto.dtype).as_numpy_dtype
  return Declared(np.dtype(object if dtype is object else dtype), shape)


def to_numpy(proto, name="tensor"):
  """TensorProto -> numpy array; a malformed proto is INVALID_ARGUMENT.

  The values present must fill the declared shape exactly (no padding)."""
  spec = declared(proto, name)
  count = math.prod(spec.shape)
  if proto.tensor_content:
    want = count * spec.dtype.itemsize
    if proto.dtype == types_pb2.DT_STRING or len(proto.tensor_content) != want:
      raise invalid(f"input '{name}': tensor_content has "
                    f"{len(proto.tensor_content)} bytes, shape "
                    f"{list(spec.shape)} of {spec.dtype.name} needs {want}")
    fast = _FAST_ENUMS.get(proto.dtype)
    if fast is not None:
      return np.frombuffer(proto.tensor_content, fast).reshape(spec.shape)
  else:
    field, per_element = _VALUE_FIELDS[proto.dtype]
    given = len(getattr(proto, field))
    if given != count * per_element:
      raise invalid(f"input '{name}': {field} has {given} values, shape "
                    f"{list(spec.shape)} needs {count * per_element}")
    fast = _FAST_ENUMS.get(proto.dtype)
    if fast is not None:
      try:
        return np.asarray(getattr(proto, field), fast).reshape(spec.shape)
      except OverflowError as e:
        raise invalid(f"input '{name}': {field} has values out of range for "
                      f"{fast.name}") from e
  try:
    return tf.make_ndarray(proto)
  except Exception as e:  # pylint: disable=broad-except
    raise invalid(f"input '{name}' is not a valid TensorProto: {e}") from e


def to_proto(array):
  """numpy array -> TensorProto (raw bytes for plain numeric dtypes)."""
  array = np.asarray(array)
  enum = _FAST_DTYPES.get(array.dtype)
  if enum is None or array.dtype.byteorder == ">":
    return tf.make_tensor_proto(array)
  proto = tensor_pb2.TensorProto(dtype=enum,
                                 tensor_content=array.tobytes())
  for size in array.shape:
    proto.tensor_shape.dim.add(size=size)
  return proto
