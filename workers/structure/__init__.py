"""Structured compression of decoder language models: attention heads (whole KV groups), MLP channels
and whole blocks or sublayers removed, reconstructed, and written out as a physically smaller model."""
