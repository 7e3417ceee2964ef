"""The report: sections computed from one read of a run (``sections``, ``search``), rendered as a
page (``page``) with figures (``figures``); ``build`` writes it. No Ray, nothing from the sweep."""
