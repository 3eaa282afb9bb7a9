"""End-to-end recipes (data, training, metrics, configs) built on the aug_attn library."""
