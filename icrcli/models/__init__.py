"""From a checkpoint to a frozen network and the way to call it: loading, architectures,
noise conventions, and taps on its layers."""
