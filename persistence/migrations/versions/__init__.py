"""The schema's revisions, one file each, in order: ``v<revision>_<what it does>.py``."""
