"""The `export` stage: the EMA generator to ONNX (+ an fp16 or int8 variant) for the web page."""
