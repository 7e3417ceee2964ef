"""The sweep: checks and concurrency (``plan``), the Tune trial driver (``trial``), the Tuner
(``tuner``), per-experiment search (``search``), live progress (``progress``), the rows it leaves
(``collect``) and the whole ``cnnc submit`` job (``submit``)."""
