"""Built-in network architectures, with the state-dict key names of their public originals."""
