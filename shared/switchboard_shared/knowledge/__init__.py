"""What the edge and the knowledge service share about ingestion into Dify datasets."""
