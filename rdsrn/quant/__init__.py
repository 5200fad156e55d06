"""Quantization-aware fine-tuning (QAT) of RDSRN: fake quantization that mirrors the
INT8 files the exporters write (see rdsrn/quant/qat.py)."""
