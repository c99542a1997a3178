"""Candidates: teachers (BM25, dense, hybrid), the encoders behind dense teachers, and exact / ANN search."""
