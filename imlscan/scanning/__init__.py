"""Scanning photos: the ``Predictor`` over the network (``predict``), the result types and the one
home of scoring (``result``), rendering (``report``), the copy-move detectors (``copymove``,
``copymove_keypoints``), folders of photos (``batch``, ``workers``) and speed (``bench``).

The package is ``scanning``, not ``scan``: ``imlscan.scan`` is the public scan function, which a
subpackage of the same name would shadow.
"""
