"""The trainer that runs on the GPU machine (or locally). Standard library + training stack only."""
