"""SegViT for segcore: plain / Shrunk ViT encoders, the ATM and Shrunk (QU + ATM) decoders and the ATM loss."""

__version__ = "0.1.0"
