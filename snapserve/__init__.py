"""snapserve's torch-free core, shared by the predictor and the transformer."""
