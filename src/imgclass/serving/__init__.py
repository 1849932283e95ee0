"""Trained models in use: predict, export (TorchScript, ONNX) and the MLflow registry."""
