"""The collection: documents, queries and graded qrels, loaded from BEIR folders, pairs files or Hugging Face datasets, and written back."""
