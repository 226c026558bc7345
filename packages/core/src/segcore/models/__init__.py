"""Model building blocks.

The contracts, component building, adapters, core's encoders / decoders / losses, shared layers and ops, variant
tables, and the assembled :class:`~segcore.models.model.SegModel` with its config.
"""
