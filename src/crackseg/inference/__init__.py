"""Running a trained model: tiling, the predictor, acceleration, ONNX export and runtime."""
