"""The inspector page of a run: its queries, every candidate with its scores and the reason it was kept
or dropped, charts, the manifest, and a comparison with another mining (:func:`inspect`)."""

from .compare import compare
from .data import PageData
from .page import inspect, load_page, static_page

__all__ = ["PageData", "compare", "inspect", "load_page", "static_page"]
