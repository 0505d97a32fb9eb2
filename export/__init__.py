"""From a trained HI-Diff to deployable artifacts.

- :mod:`export.onnx_export`: the three graphs (le_dm, denoise_step, restormer) through the dynamo
  ONNX exporter, dynamic batch and image size, fp32 or fp16 with float32 islands
- :mod:`export.graph_check`: structural checks and the node report of an exported graph
- :mod:`export.verify`: ONNX Runtime against PyTorch, per graph and chained
- :mod:`export.pipeline`: all of it into one folder with a manifest, all or nothing
- :mod:`export.trt_build`: TensorRT engines from that folder
- :mod:`export.compare`: Polygraphy's comparison of ONNX Runtime with TensorRT (or PyTorch)
- :mod:`export.adopt_plan`: a ``trtexec`` plan checked against the contracts and described
- ``hidiff-build-engines`` (``python export/build_engines.py``): the command over all of it

Submodules import their heavy dependencies (torch.onnx, onnx, onnxruntime, tensorrt) themselves,
so importing this package costs nothing.
"""
