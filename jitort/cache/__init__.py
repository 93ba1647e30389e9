"""The persistent cache of compiled variants: key (key.py), store (store.py), file-system
primitives (fs.py), the machine (device.py)."""
