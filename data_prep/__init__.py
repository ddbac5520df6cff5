"""Dataset preparation from the command line: ``python -m data_prep <command> ...``.

``worlds`` renders the synthetic worlds into the cache (``stdyn.data.cache.cache_dir("worlds")``), so
that chapters and training runs read them instead of rendering them again. Run
``python -m data_prep`` for the list of commands and ``python -m data_prep <command> -h`` for
the options of one.
"""
