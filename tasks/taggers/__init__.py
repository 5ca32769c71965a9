"""The taggers: Illustration2Vec (i2v), a wd-tagger-style ONNX model (onnx) and the colour tagger
(color), behind one interface, and the rule that chooses one (`choice`). The tag stage runs them on
the reviewed faces' crops; render runs the very tagger the tag stage used (its tagger spec,
tasks.artifacts.tagger) on generated images; the paper-scale run on its own faces."""
