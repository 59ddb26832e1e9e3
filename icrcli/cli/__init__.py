"""The thin command-line layer: parse options, call a plain function, print.
One module per command; console.py is where human-readable output goes."""
