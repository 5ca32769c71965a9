"""The detect stage: anime-face detection and cropping."""
