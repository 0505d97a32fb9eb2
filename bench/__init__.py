"""Benchmarks: latency, throughput, memory and accuracy of every backend against eager PyTorch FP32.

    python bench/latency.py --preset gopro --sizes 256x256,1280x720,1920x1080 --batches 1,4 --out OUT
    python bench/accuracy.py BLUR_DIR SHARP_DIR --backend torch-fp32 --weights W.safetensors --out OUT

:mod:`bench.latency` measures (its pieces: :mod:`bench.inputs`, the model and the frames;
:mod:`bench.backends`, the table of backends and their memory; :mod:`bench.timing`, the
instrumented pipeline and its clocks), :mod:`bench.report` turns its results into a table, markdown, JSON
(checked against ``bench/schema/latency.schema.json``) and a plot, :mod:`bench.accuracy` deblurs a
paired folder and scores it as the paper did.
"""
