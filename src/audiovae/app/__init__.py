"""The local web app (``audiovae serve``): ``api`` computes on arrays, ``server`` does the HTTP."""
