"""INT8 quantization-aware distillation for a target (the `quantize` pass).

pass_.py      QuantizeConfig, quantize(), QuantizePass: PTQ, QAT against the teacher, QDQ export, parity, speed guard
backends.py   the quantizer backends (torch-fx for ORT CPU, ModelOpt for TensorRT) behind one protocol
qdq.py        QDQ graph tidying and the target's QuantRules checks
"""
