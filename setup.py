"""tf_genrec: generative (semantic-ID) recall as one TensorFlow SavedModel.

`build_ext` compiles custom_ops/*.cc and custom_ops/engine/*.cc into one
shared library against the installed TensorFlow (tf.sysconfig flags) and the
OpenBLAS of the scipy-openblas32 wheel (the CPU engine's matrix products), so
install with `pip install --no-build-isolation -e .` into an environment that
has both (requirements.txt). With TENSORRT_LLM_ROOT set (an installed
tensorrt_llm 1.2.x package: its include/ and libs/), it also builds the
TensorRT-LLM engine's op library (docs/tensorrt_llm.md); without it the
default library is unaffected.
"""
import glob
import os
import subprocess

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

OPS_LIBRARY = "tf_genrec.ops._tf_genrec_ops"
TENSORRT_LLM_LIBRARY = "tf_genrec.ops._tf_genrec_tensorrt_llm_ops"


def tensorrt_llm_extensions():
  """The TensorRT-LLM engine's library, if TENSORRT_LLM_ROOT is set."""
  root = os.environ.get("TENSORRT_LLM_ROOT")
  if not root:
    return []
  cuda = os.environ.get("CUDA_HOME", "/usr/local/cuda")
  # engine.cc, trie.cc and the backend registry come from the default
  # library, which this one links against (built first, same directory), so
  # the backend it registers is the one the GenerationEngine resource sees.
  return [Extension(
      TENSORRT_LLM_LIBRARY,
      sorted(glob.glob("custom_ops/engine/tensorrt_llm/*.cc")),
      include_dirs=[".", os.path.join(root, "include"),
                    os.path.join(cuda, "include")],
      library_dirs=[os.path.join(root, "libs")],
      libraries=["tensorrt_llm"])]


def _openblas_flags():
  """Compile/link flags of the scipy-openblas32 wheel (the CPU engine's BLAS)."""
  import scipy_openblas32  # Only needed at build time, as is TF.

  lib = scipy_openblas32.get_lib_dir()
  return ["-isystem" + scipy_openblas32.get_include_dir(), "-L" + lib,
          "-l" + scipy_openblas32.get_library(), "-Wl,-rpath," + lib]


class TfOpsBuildExt(build_ext):
  """Builds the op library with TF's own compile/link flags (not distutils')."""

  def build_extension(self, ext):
    import tensorflow as tf  # Only needed at build time.

    out = self.get_ext_fullpath(ext.name)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    # TF's headers as system headers: their own deprecation warnings would
    # bury ours.
    compile_flags = [("-isystem" + f[2:]) if f.startswith("-I") else f
                     for f in tf.sysconfig.get_compile_flags()]
    ext_flags = (["-I" + d for d in ext.include_dirs] +
                 ["-L" + d for d in ext.library_dirs] +
                 ["-Wl,-rpath," + d for d in ext.library_dirs] +
                 ["-l" + lib for lib in ext.libraries])
    if ext.name == OPS_LIBRARY:
      ext_flags += _openblas_flags()
    if ext.name == TENSORRT_LLM_LIBRARY:
      ext_flags += ["-L" + os.path.dirname(out), "-l:_tf_genrec_ops.so",
                    "-Wl,-rpath,$ORIGIN"]
    # -O3 -fno-trapping-math: the engine's element-wise loops vectorise
    # (custom_ops/engine/vector_math.cc); custom_ops/BUILD sets the same.
    cmd = (["g++", "-shared", "-fPIC", "-O3", "-fno-trapping-math",
            "-std=c++17", "-Wall"] +
           ext.sources + ["-o", out] + compile_flags +
           tf.sysconfig.get_link_flags() + ext_flags)
    print(" ".join(cmd))
    subprocess.check_call(cmd)

  def get_ext_filename(self, ext_name):
    # A plain .so name: tf.load_op_library does not need the ABI suffix.
    return os.path.join(*ext_name.split(".")) + ".so"


setup(
    name="tf_genrec",
    version="0.1.0",
    description="LLM-based generative recall for TensorFlow recall stacks",
    # graphs/ and tools/ install under their own top-level names, the names
    # every import uses (one module object per file, one set of absl flags).
    packages=find_packages(include=["tf_genrec", "tf_genrec.*", "graphs",
                                    "tools"]),
    ext_modules=([Extension(
        OPS_LIBRARY, sorted(glob.glob("custom_ops/*.cc") +
                            glob.glob("custom_ops/engine/*.cc")),
        include_dirs=["."])] + tensorrt_llm_extensions()),
    cmdclass={"build_ext": TfOpsBuildExt},
    python_requires=">=3.10",
    install_requires=["tensorflow", "tensorflow-serving-api", "grpcio",
                      "grpcio-health-checking", "absl-py", "numpy", "tqdm"],
    entry_points={"console_scripts": ["tf-genrec=tf_genrec.cli:main"]},
)
