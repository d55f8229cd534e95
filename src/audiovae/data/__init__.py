"""Corpora: manifests, Debian-package sources, corpus builds."""
