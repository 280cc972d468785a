"""ingestd: watch folders of transcripts and documents, and keep them searchable in Qdrant."""

__version__ = "0.1.0"
