"""Export to ONNX (fp32 and int8) for the light, torch-free inference install."""
