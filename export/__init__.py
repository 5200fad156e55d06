"""`rdsrn export`: PyTorch RDSRN weights -> ONNX / TFLite files that a device can run
without torch, each checked against the PyTorch model before it is written.

    rdsrn export --model rdsrn_x4 --format all --precision fp32
    rdsrn export --model rdsrn_x4 --format all --precision int8 --calib ../shared/data/train
    python -m rdsrn.export.bundle          # rebuild runtimes/models/ from the shipped weights

Modules: cli (command), source (weights), onnx_export, tf_twin + tflite_export,
calibration (INT8 data), parity (gates), metadata (embedded JSON), bundle, int8_study.
Design notes: the exported graphs clamp the output to [0, 1] and every parity figure
compares with the clamped PyTorch output (export/parity.py); the metadata fields are
those of runtimes/formats.py plus `output_clamped`, `input_name`, `output_name`, `eval`.
"""
