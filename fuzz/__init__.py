"""Coverage-guided fuzz targets (atheris): one module per input surface, each asserting its invariant."""
