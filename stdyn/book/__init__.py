"""The book: runs the chapters with papermill and builds the site (:mod:`stdyn.book.runner`).

``python -m stdyn.book`` runs every chapter at the default profile, then builds the site.
"""
from stdyn.book.runner import build_site, chapters, find_chapter, main, run_chapter

__all__ = ["build_site", "chapters", "find_chapter", "main", "run_chapter"]
