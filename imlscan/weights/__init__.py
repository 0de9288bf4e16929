"""Weights files: the safetensors store and its metadata (``store``), Hugging Face Hub downloads
(``hub``), conversion of the authors' checkpoints (``convert``) and the base of the settings that
weights files carry (``settings``).

Modules are imported by their full name (``imlscan.weights.store``) so that importing one of them,
for example the torch-free ``hub``, never pulls in the others.
"""
