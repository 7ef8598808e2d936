"""Models that ship with BoneKit: ``catalogue.json`` lists them (``bonekit sr models``)."""
