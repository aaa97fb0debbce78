"""Models: the embedders, and which one runs on this machine.

embedding (the `Embedder` protocol and sentence-transformers), openvino (int8 and fp32
exports), backends (make an embedder by name), choice (measure the backends that passed
the quality guard and cache the fastest), verdicts (the guard's recorded verdicts),
calibration, cpu. Imports only `retrieval.records` and `retrieval.errors`: choosing an
embedder never reaches the evaluation that judged it.
"""
