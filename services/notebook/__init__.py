"""The notebook service: Notebook servers and their volumes (PersistentVolumeClaims)."""
