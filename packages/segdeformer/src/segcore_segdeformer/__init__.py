"""SegDeformer decoder and MiT encoders for segcore (``pip install segcore-segdeformer``)."""

__version__ = "0.1.0"
