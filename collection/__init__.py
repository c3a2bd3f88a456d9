"""Data collection: plans, sources (synthetic studio, uploads, importers), QC, labeling, manifests."""
